"""Command line for applying a GANgealing model to real images (upstream applications/, GANgealing §4, app. E, G).

    python -m jaxgeal.align congeal         --model DIR --input FILE_OR_DIR --out DIR   # aligned PNGs + average.png
    python -m jaxgeal.align correspond      --model DIR --image_a A --image_b B --points_a P.json --out DIR
    python -m jaxgeal.align flow-scores     --model DIR --input DIR --out DIR            # flow_scores.json / .csv
    python -m jaxgeal.align congeal-dataset --model DIR --input DIR --out DIR [--fraction_retained F ...]
    python -m jaxgeal.align propagate       --model DIR --input FILE_OR_DIR --label RGBA.png --out DIR
                                            [--blend laplacian]
    python -m jaxgeal.align video           --model DIR --input VIDEO --label RGBA.png --out OUT.mp4
                                            [--blend laplacian] [--save_correspondences CORR.npz]
    python -m jaxgeal.align animate         --model DIR --input FILE_OR_DIR --out DIR [--grid] [--flow_image]

Test-time settings (--iters, --padding_mode) default to the model's own (its `test` config), as upstream's
pretrained hyper-parameters; --no_flip disables flip inference (appendix B.4).

Outputs: one per input image, named by its stem (cat.jpg -> cat.png); inputs sharing a stem (cat.jpg and
cat.png), or whose stem is a name the command writes itself (average), keep their whole name (cat.jpg.png,
cat.png.png). No command writes over one of its inputs (the images, --label, --model, the video): such an
--out is refused before anything is written, as is an --out below a file.

Labels (propagate, video): an RGBA PNG in the congealed frame, any square size; RGB is opaque, and a
grayscale image is a mask: white, with the gray value as opacity (black = unlabelled).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import pathlib
import shutil
import sys
import tempfile

import numpy as np

from jaxgeal import cli, compile_cache


def _image_size(f) -> tuple[int, int]:
  """(w, h) of an image file from its header; ValueError naming the file when it is not a readable image."""
  from PIL import Image

  try:
    with Image.open(f) as im:
      return im.size
  except (OSError, SyntaxError, ValueError) as e:
    raise ValueError(f"cannot read image {f}: {e}") from e


def _note_resized(sizes, size: int) -> None:
  resized = sum(tuple(s) != (size, size) for s in sizes)
  if resized:
    print(f"note: resized {resized} image(s) to the model's {size}x{size} input", file=sys.stderr)


def _load_images(files, size: int, source_sizes: list | None = None) -> np.ndarray:
  """Images resized (bicubic) to the model's size; a note is printed when any is resized. min(w, h) of
  each original is appended to `source_sizes` when given."""
  from jaxgeal import images as images_lib

  sizes, out = [], []
  for f in files:
    sizes.append(_image_size(f))
    if source_sizes is not None:
      source_sizes.append(min(sizes[-1]))
    out.append(images_lib.load_image(f, size))
  _note_resized(sizes, size)
  return np.stack(out)


DECODE_AHEAD = 3  # batches decoded before the STN asks for them: enough to cover a slow file or two
DECODE_WORKERS = min(8, os.cpu_count() or 1)


def _decode_ahead(pool, files, size: int, batch_size: int, ahead: int = DECODE_AHEAD):
  """Yields the images of `files` as (n <= batch_size, size, size, 3) float batches in [-1, 1], decoded and
  resized (bicubic) by the thread pool `pool` up to `ahead` batches before they are asked for. Threads suffice:
  PIL releases the GIL while it decodes and resizes."""
  from jaxgeal import images as images_lib

  todo, queue = iter(files), collections.deque()
  try:
    while True:
      while len(queue) < ahead * batch_size and (f := next(todo, None)) is not None:
        queue.append(pool.submit(images_lib.load_image, f, size))
      if not queue:
        return
      yield np.stack([queue.popleft().result() for _ in range(min(batch_size, len(queue)))])
  finally:  # Stopped early (an unreadable image): decode nothing more.
    for future in queue:
      future.cancel()


@contextlib.contextmanager
def _staging(d: pathlib.Path):
  """A temporary folder next to the output directory `d`; its files move into `d` when the block succeeds, and
  it is removed either way, so a failed run leaves `d` as it was."""
  base = d if d.is_dir() else next(p for p in d.absolute().parents if p.exists())  # Same filesystem as d.
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=".jaxgeal-congeal-", dir=base))
  try:
    yield tmp
    d.mkdir(parents=True, exist_ok=True)
    for f in sorted(tmp.iterdir()):
      os.replace(f, d / f.name)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _load_label(path) -> np.ndarray:
  from jaxgeal.align import splat

  return splat.load_label(path)


def _model_files(args) -> list[pathlib.Path]:
  return cli.files_under(args.model) if pathlib.Path(args.model).exists() else []


def _check_dir_outputs(args, names, inputs) -> pathlib.Path:
  """Refuses (before the model loads) an --out that is a file or would overwrite an input; returns it."""
  d = pathlib.Path(args.out)
  cli.check_output_dir(d)
  cli.check_outputs([d / n for n in names], list(inputs) + _model_files(args))
  return d


def _aligner(args):
  from jaxgeal.align import Aligner

  return Aligner.load(
    args.model, iters=args.iters, padding_mode=args.padding_mode, flip=not args.no_flip, batch_size=args.batch_size
  )


def _names(files, reserved=()):
  return cli.output_names(files, reserved)


def cmd_congeal(args):
  """Streams the images through the STN: a thread pool decodes and resizes them a few batches ahead, the STN
  runs batches of one shape (the last one padded: one compilation), and each batch's PNGs are written as it
  comes back while the next one runs, with a progress bar (images/s, ETA) on a terminal. Every header is read
  first, so an unreadable file fails before any work; outputs go to a staging folder moved into --out at the
  end, so one that fails to decode later leaves nothing behind either."""
  from concurrent import futures

  from tqdm import tqdm

  from jaxgeal import images as images_lib

  files = cli.list_images(args.input)
  names = _names(files, reserved=("average",))
  planned = [f"{n}.png" for n in names] + ["average.png", "flips.json"]
  planned += [f"{n}_flow.png" for n in names] if args.flow_image else []
  d = _check_dir_outputs(args, planned, files)
  a = _aligner(args)
  bs = min(args.batch_size, len(files))  # As Aligner.congeal: no padding beyond the number of images.
  total, flips = None, {}
  with futures.ThreadPoolExecutor(DECODE_WORKERS, thread_name_prefix="congeal-decode") as pool:
    _note_resized(pool.map(_image_size, files), a.size)
    chunks = _decode_ahead(pool, files, a.size, bs)
    stream = a.congeal_batches(chunks, output_resolution=args.size, cluster=args.cluster, batch_size=bs)
    # disable=None: no bar without a terminal (logs), as the trainers' bars.
    progress = dict(desc="congeal", unit="images", dynamic_ncols=True, disable=None, file=sys.stderr)
    with contextlib.closing(chunks), _staging(d) as tmp, tqdm(total=len(files), **progress) as bar:
      for out in stream:
        batch = names[len(flips) : len(flips) + len(out["aligned"])]
        for name, img in zip(batch, out["aligned"]):
          images_lib.save_image(tmp / f"{name}.png", img)
        if args.flow_image:
          _save_flow_images(a, tmp, batch, out)
        flips.update({n: bool(f) for n, f in zip(batch, out["flipped"])})
        batch_sum = out["aligned"].sum(0, dtype=np.float64)
        total = batch_sum if total is None else total + batch_sum
        bar.update(len(batch))
      images_lib.save_image(tmp / "average.png", total / len(files))
      (tmp / "flips.json").write_text(json.dumps(flips))
  print(f"wrote {len(files)} congealed images and average.png to {d}")


def _save_flow_images(aligner, d, names, out):
  from jaxgeal import images as images_lib
  from jaxgeal.align import visualize

  for name, img in zip(names, visualize.flow_image(aligner, None, out=out)):
    images_lib.save_image(d / f"{name}_flow.png", img)


def cmd_correspond(args):
  from jaxgeal import images as images_lib
  from jaxgeal.align import visualize

  planned = ["points_b.json", "correspondences.png"] + (["dense_flow_a_to_b.npy"] if args.dense else [])
  d = _check_dir_outputs(args, planned, [args.image_a, args.image_b, args.points_a])
  a = _aligner(args)
  imgs = _load_images([pathlib.Path(args.image_a), pathlib.Path(args.image_b)], a.size)
  d.mkdir(parents=True, exist_ok=True)
  if args.points_a:
    pa = np.asarray(json.loads(pathlib.Path(args.points_a).read_text()), np.float32).reshape(-1, 2)
  else:  # A regular grid of points over image A.
    g = np.linspace(a.size * 0.15, a.size * 0.85, args.num_points)
    pa = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2).astype(np.float32)
  pb = a.transfer_points(imgs[:1], imgs[1:], pa[None])[0]
  (d / "points_b.json").write_text(json.dumps(pb.tolist()))
  vis = visualize.correspondence_grid(imgs, np.stack([pa, pb]), nrow=2)  # A | B, point i in colour i.
  images_lib.save_image(d / "correspondences.png", vis)
  if args.dense:
    np.save(d / "dense_flow_a_to_b.npy", a.dense_correspondence(imgs[0], imgs[1]))
  print(f"transferred {len(pa)} points; wrote points_b.json and correspondences.png to {d}")


def cmd_flow_scores(args):
  from jaxgeal.align import dataset

  files = cli.list_images(args.input)
  _check_dir_outputs(args, ["flow_scores.json", "flow_scores.csv"], files)
  a = _aligner(args)
  scores = a.flow_scores(_load_images(files, a.size), cluster=args.cluster)
  js, cs = dataset.write_scores(args.out, _names(files), scores)
  print(f"wrote {js} and {cs} (lower score = smoother flow)")


def cmd_congeal_dataset(args):
  from jaxgeal import images as images_lib
  from jaxgeal.align import dataset

  files = cli.list_images(args.input)
  names = _names(files)
  d = _check_dir_outputs(args, [f"{n}.png" for n in names], files)
  a = _aligner(args)
  sizes = []
  ims = _load_images(files, a.size, sizes)
  out = a.congeal_similarity(ims, output_resolution=args.size, source_sizes=sizes, cluster=args.cluster)
  kept = dataset.select(
    out["score"], args.fraction_retained, out["oob"], out["effective_resolution"], args.min_effective_resolution
  )
  for i in kept:
    images_lib.save_image(d / f"{names[i]}.png", out["aligned"][i])
  print(f"kept {len(kept)} of {len(files)} images in {d}")


def cmd_propagate(args):
  from jaxgeal import images as images_lib

  files = cli.list_images(args.input)
  names = _names(files)
  planned = [f"{n}.png" for n in names] + ([f"{n}_rgba.png" for n in names] if args.save_rgba else [])
  d = _check_dir_outputs(args, planned, files + [pathlib.Path(args.label)])
  label = _load_label(args.label)
  a = _aligner(args)
  prop = a.propagate(
    _load_images(files, a.size),
    label,
    sigma=args.sigma,
    opacity=args.opacity,
    cluster=args.cluster,
    blend=args.blend,
    levels=args.blend_levels,
  )
  for name, comp, rgba in zip(names, prop["composite"], prop["rgba"]):
    images_lib.save_image(d / f"{name}.png", comp)
    if args.save_rgba:
      rgba_u8 = np.concatenate(
        [images_lib.to_uint8(rgba[..., :3]), np.round(np.clip(rgba[..., 3:], 0, 1) * 255).astype(np.uint8)], -1
      )
      images_lib.save_image(d / f"{name}_rgba.png", rgba_u8)
  print(f"propagated {args.label} into {len(files)} images in {d}")


def cmd_video(args):
  from jaxgeal.align import video

  if not pathlib.Path(args.input).is_file():
    raise FileNotFoundError(f"input video {args.input} does not exist or is not a file")
  cli.check_output_file(args.out, "output video")
  outputs = [args.out]
  if args.save_correspondences:
    cli.check_output_file(video.correspondences_path(args.save_correspondences), "--save_correspondences file")
    outputs.append(video.correspondences_path(args.save_correspondences))
  cli.check_outputs(outputs, [args.input, args.label] + _model_files(args))
  label = _load_label(args.label)
  a = _aligner(args)
  n = video.propagate_video(
    a,
    args.input,
    args.out,
    label,
    sigma=args.sigma,
    opacity=args.opacity,
    chunk=args.chunk,
    fps=args.fps,
    blend=args.blend,
    levels=args.blend_levels,
    save_correspondences=args.save_correspondences,
  )
  print(f"wrote {n} frames to {args.out}")
  if args.save_correspondences:
    print(f"wrote the correspondences of {n} frames to {video.correspondences_path(args.save_correspondences)}")


def cmd_animate(args):
  from jaxgeal.align import visualize

  files = cli.list_images(args.input)
  names = _names(files, reserved=("congealing",) if args.grid else ())
  stems = ["congealing"] if args.grid else names
  # An mp4 falls back to a gif beside it where ffmpeg is missing: both must be safe to write.
  planned = [f"{n}.{ext}" for n in stems for ext in ((args.format, "gif") if args.format == "mp4" else ("gif",))]
  planned += [f"{n}_flow.png" for n in names] if args.flow_image else []
  d = _check_dir_outputs(args, planned, files)
  a = _aligner(args)
  imgs = _load_images(files, a.size)
  out = a.congeal(imgs, output_resolution=args.size, cluster=args.cluster)
  kw = dict(
    fps=args.fps, num_frames=args.frames, flip_frames=args.flip_frames, hold=args.hold, output_resolution=args.size
  )
  if args.grid:  # One animation of all images, a grid per frame.
    written = [visualize.animate(a, imgs, d / f"congealing.{args.format}", out=out, nrow=args.nrow, **kw)]
  else:
    written = []
    for i, name in enumerate(names):
      one = {k: None if v is None else v[i : i + 1] for k, v in out.items()}
      written.append(visualize.animate(a, imgs[i : i + 1], d / f"{name}.{args.format}", out=one, **kw))
  if args.flow_image:
    _save_flow_images(a, d, names, out)
  print(
    f"wrote {len(written)} animation(s) ({', '.join(sorted({p.suffix for p in written}))}) to {d}"
    + (" and flow images" if args.flow_image else "")
  )


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m jaxgeal.align",
    description=__doc__,
    allow_abbrev=False,
    epilog=cli.OUTPUT_NAME_RULE,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  sub = parser.add_subparsers(dest="command", required=True)

  def add_blend(p):
    p.add_argument(
      "--blend",
      choices=("alpha", "laplacian"),
      default="alpha",
      help="compositing of the edit: alpha, or Laplacian-pyramid blending (seamless)",
    )
    p.add_argument("--blend_levels", type=cli.positive_int, default=5, help="pyramid levels of --blend laplacian")

  def add(name, fn, help_):
    p = sub.add_parser(name, help=help_, description=help_, epilog=cli.OUTPUT_NAME_RULE, allow_abbrev=False)
    p.add_argument("--model", required=True, help="model directory (t_ema [+ classifier])")
    p.add_argument("--out", required=True, help="output directory (video: output file)")
    p.add_argument("--batch_size", type=cli.positive_int, default=32, help="images per batch")
    p.add_argument("--iters", type=cli.positive_int, default=None, help="similarity STN iterations (default: model's)")
    p.add_argument(
      "--padding_mode",
      choices=("border", "zeros", "reflection"),
      default=None,
      help="padding of the warp (default: model's)",
    )
    p.add_argument("--no_flip", action="store_true", help="disable flip inference")
    p.add_argument(
      "--cluster", type=cli.nonnegative_int, default=None, help="clustering models: use this head for all images"
    )
    p.set_defaults(fn=fn)
    return p

  p = add(
    "congeal",
    cmd_congeal,
    "congeal images; write aligned PNGs and average.png (decoding runs in parallel with the STN; a progress "
    "bar shows images/s on a terminal)",
  )
  p.add_argument("--input", required=True, help="an image or a directory of images")
  p.add_argument("--size", type=cli.positive_int, default=None, help="output resolution (default: model's input size)")
  p.add_argument(
    "--flow_image",
    action="store_true",
    help="also write NAME_flow.png: the warp's displacement in Middlebury flow colours",
  )
  p = add("correspond", cmd_correspond, "transfer key points from image A to image B (+ visualisation)")
  p.add_argument("--image_a", required=True)
  p.add_argument("--image_b", required=True)
  p.add_argument("--points_a", default=None, help="JSON list of [x, y] pixels of A (default: a grid)")
  p.add_argument("--num_points", type=cli.positive_int, default=6, help="grid points per side without --points_a")
  p.add_argument("--dense", action="store_true", help="also save the dense A->B flow (S, S, 2) .npy")
  p = add("flow-scores", cmd_flow_scores, "per-image flow smoothness scores (lower is smoother), sorted")
  p.add_argument("--input", required=True)
  p = add("congeal-dataset", cmd_congeal_dataset, "similarity-align and filter a dataset (appendix E)")
  p.add_argument("--input", required=True)
  p.add_argument("--size", type=cli.positive_int, default=None, help="output resolution")
  p.add_argument("--fraction_retained", type=cli.fraction, default=1.0)
  p.add_argument("--min_effective_resolution", type=cli.nonnegative_float, default=192)
  p = add("propagate", cmd_propagate, "propagate a congealed RGBA label/mask/edit into images by splatting")
  p.add_argument("--input", required=True)
  p.add_argument(
    "--label",
    required=True,
    help="RGBA PNG in the congealed frame, any square size (grayscale: a white mask, gray value = opacity)",
  )
  p.add_argument("-s", "--sigma", type=cli.positive_float, default=1.3)
  p.add_argument("-o", "--opacity", type=cli.fraction, default=0.75)
  p.add_argument("--save_rgba", action="store_true", help="also save the propagated RGBA layer")
  add_blend(p)
  p = add("video", cmd_video, "propagate an RGBA edit into every frame of a video (streaming)")
  p.add_argument("--input", required=True, help="video file (anything imageio-ffmpeg reads)")
  p.add_argument("--label", required=True)
  p.add_argument("-s", "--sigma", type=cli.positive_float, default=1.2)
  p.add_argument("-o", "--opacity", type=cli.fraction, default=0.7)
  p.add_argument("--chunk", type=cli.positive_int, default=16, help="frames per batch (memory bound)")
  p.add_argument("--fps", type=cli.positive_float, default=None, help="output fps (default: the input's)")
  add_blend(p)
  p.add_argument(
    "--save_correspondences",
    default=None,
    metavar="PATH",
    help="stream every frame's congealed->frame correspondences to PATH (.npz: points (F, P, 2) "
    "pixel x, y at the model resolution, inside (F, P), congealed (P, 2) label pixels)",
  )
  p = add("animate", cmd_animate, "animate images congealing (input -> aligned) as mp4 (gif without ffmpeg)")
  p.add_argument("--input", required=True, help="an image or a directory of images")
  p.add_argument("--frames", type=cli.at_least(2), default=48, help="frames of the warp (both ends included)")
  p.add_argument("--flip_frames", type=cli.nonnegative_int, default=16, help="frames turning flipped images over first")
  p.add_argument("--hold", type=cli.nonnegative_int, default=12, help="copies of the last frame (pause before looping)")
  p.add_argument("--fps", type=cli.positive_float, default=24)
  p.add_argument("--format", choices=("mp4", "gif"), default="mp4", help="mp4 falls back to gif without ffmpeg")
  p.add_argument("--grid", action="store_true", help="one animation of all images as a grid (congealing.FMT)")
  p.add_argument("--nrow", type=cli.positive_int, default=None, help="images per grid row (default: square-ish)")
  p.add_argument("--size", type=cli.positive_int, default=None, help="frame resolution (default: model's input size)")
  p.add_argument(
    "--flow_image",
    action="store_true",
    help="also write NAME_flow.png: the warp's displacement in Middlebury flow colours",
  )
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  compile_cache.enable()  # a second call starts in seconds (JAXGEAL_COMPILATION_CACHE=off: no cache)
  from jaxgeal.align import ModelNotFoundError

  try:
    args.fn(args)
  except (ModelNotFoundError, OSError, ValueError) as e:  # OSError: unwritable / missing paths.
    cli.print_error(cli.error_line(e))
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
