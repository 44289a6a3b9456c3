"""Command line for applying a trained Swapping Autoencoder to images (Park et al., NeurIPS 2020, §4).

    python -m jaxgeal.swap grid        --model DIR --structure A [B ...] --texture X [Y ...] --out GRID.png
    python -m jaxgeal.swap swap        --model DIR --structure A --texture B --out DIR [--pairs PAIRS.txt]
    python -m jaxgeal.swap interpolate --model DIR --structure A [--texture_a X] --texture_b Y --out STRIP.png
                                       [--steps 8] [--gif [--fps 8]]
    python -m jaxgeal.swap region      --model DIR --structure A --texture B --mask M.png --out OUT.png
    python -m jaxgeal.swap edit        --model DIR --image A --direction {pca:K | D.npy} --amount A
                                       --out STRIP.png [--steps 5] [--folder F]

Every image is read as 8-bit RGB (jaxgeal.images: grayscale, 16-bit and alpha images are converted) and resized
(bicubic) to --size, by default the model's training size. Decoding uses fixed noise maps (jaxgeal.swap.
autoencoder), so an output depends only on its own pair of images.

* grid: upstream's structure-style grid (evaluation/structure_style_grid_generation_evaluator.py): first row
  the texture images, first column the structure images, top-left corner white, cell (i, j) = structure i with
  texture j; cells are SIZE x SIZE without gaps. --structure / --texture take files and folders.
* swap: one output per (structure, texture) pair, named `<structure stem>__<texture stem>.png` in --out: two
  files; a file and a folder (the file paired with every image of the folder); two folders paired in sorted
  order, or by --pairs, a text file of `STRUCTURE TEXTURE` lines naming files in those folders.
* interpolate: the texture code moves from X's (default: A's own, i.e. from the reconstruction) to Y's in
  --steps (upstream's `--texture_mix_alphas`, a linear interpolation); a strip of the steps, or a GIF.
* region: Y's texture inside the mask only (white = swapped; gray = partly; resized to the output). The
  generator takes one texture vector per image, so the image is decoded with each texture and the two decodes
  (same structure code, same noise) are blended by the mask.
* edit: the texture code moves along a direction, amounts evenly spaced in [-A, A] (--steps, default 5; the
  middle one of an odd count is the reconstruction), as a strip. `pca:K` is the K-th (from 0) principal
  direction of the texture codes of --folder's images, in units of their standard deviation along it;
  a .npy holds a (global_code_ch,) vector, added as given times the amount.

No command writes over one of its inputs (the images, the mask, the direction, --model): such an --out is
refused before anything is written. User mistakes are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

from jaxgeal import cli, compile_cache


def _gather(paths) -> list[pathlib.Path]:
  return [f for p in paths for f in cli.list_images(p)]


def _check_outputs(args, outputs, inputs, folder: pathlib.Path | None = None) -> None:
  """Refuses, before the model loads, output files that would overwrite an input or the model (or, with
  `folder`, outputs in a folder that cannot be made)."""
  if folder is not None:
    cli.check_output_dir(folder)
  else:
    for out in outputs:
      cli.check_output_file(out)
  model = cli.files_under(args.model) if pathlib.Path(args.model).exists() else []
  cli.check_outputs(outputs, [*inputs, *model])


def _model(args):
  from jaxgeal.swap import SwappingAutoencoder

  model = SwappingAutoencoder.load(args.model)
  size = args.size or model.size
  if size is None:
    raise cli.UsageError(f"{args.model} does not record its training image size; pass --size")
  model.check_images(np.zeros((1, size, size, 3)))
  return model, size


def _load(files, size: int) -> np.ndarray:
  from jaxgeal import images

  return np.stack([images.load_image(f, size) for f in files])


def _batches(n: int, batch_size: int, desc: str | None = None):
  """Start indices of batches; a tqdm bar (desc) when there is more than one."""
  from tqdm import tqdm

  starts = range(0, n, batch_size)
  return tqdm(starts, desc=desc, unit="batch", disable=desc is None or len(starts) < 2)


def _encode_files(model, files, size: int, batch_size: int, desc: str | None = None):
  """(structure codes, texture codes) of image files, in batches."""
  s, t = [], []
  for i in _batches(len(files), batch_size, desc):
    a, b = model.encode(_load(files[i : i + batch_size], size))
    s.append(np.asarray(a))
    t.append(np.asarray(b))
  return np.concatenate(s), np.concatenate(t)


def _decode(model, structure, texture, batch_size: int, desc: str | None = None) -> np.ndarray:
  """Aligned (N, ...) codes -> (N, H, W, 3) images in [-1, 1], in batches."""
  out = []
  for i in _batches(len(structure), batch_size, desc):
    out.append(np.asarray(model.decode(structure[i : i + batch_size], texture[i : i + batch_size])))
  return np.concatenate(out)


def _save(path, image) -> None:
  from jaxgeal import images

  images.save_image(path, image)
  print(f"wrote {path}")


# -- subcommands -------------------------------------------------------------------------------------------------


def cmd_grid(args):
  from jaxgeal import images

  structures, textures = _gather(args.structure), _gather(args.texture)
  out = pathlib.Path(args.out)
  _check_outputs(args, [out], structures + textures)
  model, size = _model(args)
  s, _ = _encode_files(model, structures, size, args.batch_size, "structure codes")
  _, t = _encode_files(model, textures, size, args.batch_size, "texture codes")
  ns, nt = len(structures), len(textures)
  cells = _decode(model, np.repeat(s, nt, axis=0), np.tile(t, (ns, 1)), args.batch_size, "swaps")
  grid = np.full(((ns + 1) * size, (nt + 1) * size, 3), 255, np.uint8)
  for j, f in enumerate(textures):
    grid[:size, (j + 1) * size : (j + 2) * size] = images.to_uint8(_load([f], size)[0])
  for i, f in enumerate(structures):
    grid[(i + 1) * size : (i + 2) * size, :size] = images.to_uint8(_load([f], size)[0])
  for k, cell in enumerate(images.to_uint8(cells)):
    i, j = divmod(k, nt)
    grid[(i + 1) * size : (i + 2) * size, (j + 1) * size : (j + 2) * size] = cell
  _save(out, grid)


def _read_pairs(path, structure_dir: pathlib.Path, texture_dir: pathlib.Path):
  pairs = []
  for n, line in enumerate(pathlib.Path(path).read_text().splitlines(), start=1):
    if not line.strip() or line.lstrip().startswith("#"):
      continue
    fields = line.split("\t") if "\t" in line else line.split()
    if len(fields) != 2:
      raise cli.UsageError(f"{path}:{n}: expected 'STRUCTURE TEXTURE' (two names), got {line.strip()!r}")
    s, t = (d / name.strip() for d, name in zip((structure_dir, texture_dir), fields))
    for f in (s, t):
      if not f.is_file():
        raise FileNotFoundError(f"{path}:{n}: {f} does not exist")
    pairs.append((s, t))
  if not pairs:
    raise cli.UsageError(f"{path} lists no pairs")
  return pairs


def _swap_pairs(args) -> list[tuple[pathlib.Path, pathlib.Path]]:
  s_path, t_path = pathlib.Path(args.structure), pathlib.Path(args.texture)
  if args.pairs:
    if not (s_path.is_dir() and t_path.is_dir()):
      raise cli.UsageError("--pairs names files in the --structure and --texture folders: give two folders")
    return _read_pairs(args.pairs, s_path, t_path)
  structures, textures = cli.list_images(s_path), cli.list_images(t_path)
  if s_path.is_file() or t_path.is_file():
    return [(s, t) for s in structures for t in textures]
  if len(structures) != len(textures):
    raise cli.UsageError(
      f"{len(structures)} structure images in {s_path} but {len(textures)} texture images in {t_path}: "
      "folders are paired in sorted order; give equal counts or --pairs"
    )
  return list(zip(structures, textures))


def cmd_swap(args):
  pairs = _swap_pairs(args)
  d = pathlib.Path(args.out)
  outputs = [d / f"{s.stem}__{t.stem}.png" for s, t in pairs]
  inputs = [f for pair in pairs for f in pair] + ([args.pairs] if args.pairs else [])
  _check_outputs(args, outputs, inputs, folder=d)
  model, size = _model(args)
  from jaxgeal import images

  for i in _batches(len(pairs), args.batch_size, "swaps"):
    chunk = pairs[i : i + args.batch_size]
    swapped = model.swap(_load([s for s, _ in chunk], size), _load([t for _, t in chunk], size))
    for path, image in zip(outputs[i : i + args.batch_size], np.asarray(swapped)):
      images.save_image(path, image)
  print(f"wrote {len(outputs)} swapped images to {d}")


def _strip(frames) -> np.ndarray:
  from jaxgeal import images

  return np.concatenate(list(images.to_uint8(frames)), axis=1)


def cmd_interpolate(args):
  from jaxgeal import images

  out = pathlib.Path(args.out)
  if args.gif and out.suffix.lower() != ".gif":
    raise cli.UsageError(f"--gif writes a GIF animation: name --out with .gif, not {out.name}")
  inputs = [args.structure, args.texture_a or args.structure, args.texture_b]
  for p in inputs:
    if not pathlib.Path(p).is_file():
      raise FileNotFoundError(f"input {p} is not an image file")
  _check_outputs(args, [out], inputs)
  model, size = _model(args)
  s, t_a = model.encode(_load(inputs[:2], size))
  _, t_b = model.encode(_load(inputs[2:], size))
  alphas = np.linspace(0.0, 1.0, args.steps, dtype=np.float32)
  s, t_a = s[:1], t_a[1:2]
  frames = np.concatenate(
    [
      np.asarray(model.mix(s, t_a, t_b, alphas[i : i + args.batch_size]))
      for i in _batches(args.steps, args.batch_size, "steps")
    ]
  )
  if not args.gif:
    _save(out, _strip(frames))
    return
  from PIL import Image

  out.parent.mkdir(parents=True, exist_ok=True)
  pil = [Image.fromarray(f) for f in images.to_uint8(frames)]
  pil[0].save(out, format="GIF", save_all=True, append_images=pil[1:], duration=round(1000 / args.fps), loop=0)
  print(f"wrote {out} ({len(pil)} frames)")


def _read_mask(path) -> np.ndarray:
  from jaxgeal import images

  try:
    return images.read_rgb(path).astype(np.float32).mean(axis=-1) / 255.0
  except (OSError, SyntaxError, ValueError) as e:
    raise ValueError(f"cannot read mask {path}: {e}") from None


def cmd_region(args):
  out = pathlib.Path(args.out)
  inputs = [args.structure, args.texture, args.mask]
  for p in inputs:
    if not pathlib.Path(p).is_file():
      raise FileNotFoundError(f"input {p} is not an image file")
  _check_outputs(args, [out], inputs)
  mask = _read_mask(args.mask)
  model, size = _model(args)
  _save(out, np.asarray(model.swap_region(_load([args.structure], size), _load([args.texture], size), mask))[0])


def _pca_index(args) -> int | None:
  """K of `--direction pca:K` (checked with --folder before anything loads), or None for a .npy direction."""
  if not args.direction.startswith("pca:"):
    return None
  if not args.direction[4:].isdigit():
    raise cli.UsageError(f"--direction {args.direction}: expected pca:K with K an integer >= 0")
  if args.folder is None:
    raise cli.UsageError("--direction pca:K needs --folder (the images whose texture codes give the directions)")
  return int(args.direction[4:])


def _direction(args, model, size, k: int | None, folder_files) -> tuple[np.ndarray, str]:
  """(unit of the edit, description): a PCA direction times its std, or the .npy vector as given."""
  if k is not None:
    from jaxgeal.swap import principal_directions

    _, textures = _encode_files(model, folder_files, size, args.batch_size, "texture codes")
    directions, stds = principal_directions(textures)
    if k >= len(directions):
      raise cli.UsageError(
        f"--direction pca:{k}: the {len(textures)} images in {args.folder} give {len(directions)} directions "
        f"(pca:0 to pca:{len(directions) - 1})"
      )
    return directions[k] * stds[k], f"principal direction {k} (std {stds[k]:.4f})"
  try:
    with open(args.direction, "rb") as f:
      if f.read(6) != b"\x93NUMPY":
        raise ValueError("not a .npy array file")
    v = np.load(args.direction, allow_pickle=False)
  except (OSError, ValueError, EOFError) as e:
    raise ValueError(f"cannot read direction {args.direction}: {cli.error_line(e)}") from None
  channels = model.generator.global_code_ch
  if not isinstance(v, np.ndarray) or v.size != channels or not np.issubdtype(v.dtype, np.number):
    raise cli.UsageError(f"direction {args.direction} must be an array of {channels} numbers (a texture code's size)")
  return v.astype(np.float32).reshape(-1), f"direction {args.direction}"


def cmd_edit(args):
  out = pathlib.Path(args.out)
  if not pathlib.Path(args.image).is_file():
    raise FileNotFoundError(f"input {args.image} is not an image file")
  k = _pca_index(args)
  folder_files = cli.list_images(args.folder) if k is not None else []
  if k is not None and len(folder_files) < 2:
    raise cli.UsageError(f"--folder {args.folder} holds one image; principal directions need at least two")
  inputs = [args.image, *folder_files] + ([args.direction] if k is None else [])
  _check_outputs(args, [out], inputs)
  model, size = _model(args)
  direction, what = _direction(args, model, size, k, folder_files)
  s, t = model.encode(_load([args.image], size))
  amounts = np.linspace(-args.amount, args.amount, args.steps, dtype=np.float32)
  textures = np.asarray(t) + amounts[:, None] * direction[None]
  frames = _decode(model, np.repeat(np.asarray(s), args.steps, axis=0), textures, args.batch_size)
  print(f"{what}, amounts {', '.join(f'{a:g}' for a in amounts)}")
  _save(out, _strip(frames))


# -- parser --------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m jaxgeal.swap",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
    allow_abbrev=False,
  )
  sub = parser.add_subparsers(dest="command", required=True)

  def add(name, fn, helptext, out_help):
    p = sub.add_parser(name, help=helptext, allow_abbrev=False)
    p.add_argument("--model", required=True, help="Swapping Autoencoder model directory (python -m jaxgeal.convert)")
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--size", type=cli.positive_int, default=None, help="image size (default: the model's)")
    p.add_argument("--batch_size", type=cli.positive_int, default=8)
    p.set_defaults(fn=fn)
    return p

  p = add("grid", cmd_grid, "structure x texture grid (upstream's structure-style grid)", "grid image (.png)")
  p.add_argument("--structure", nargs="+", required=True, help="images / folders: the rows")
  p.add_argument("--texture", nargs="+", required=True, help="images / folders: the columns")
  p = add("swap", cmd_swap, "structure of one image, texture of another", "output folder")
  p.add_argument("--structure", required=True, help="an image or a folder")
  p.add_argument("--texture", required=True, help="an image or a folder")
  p.add_argument("--pairs", default=None, help="text file of 'STRUCTURE TEXTURE' names in the two folders")
  p = add("interpolate", cmd_interpolate, "interpolate the texture code", "strip image (.png) or .gif")
  p.add_argument("--structure", required=True)
  p.add_argument("--texture_a", default=None, help="start texture (default: the structure image's own)")
  p.add_argument("--texture_b", required=True, help="end texture")
  p.add_argument("--steps", type=cli.at_least(2), default=8, help="images, both ends included")
  p.add_argument("--gif", action="store_true", help="write a GIF animation instead of a strip")
  p.add_argument("--fps", type=cli.positive_float, default=8.0, help="GIF frames per second")
  p = add("region", cmd_region, "swap the texture inside a mask only", "output image")
  p.add_argument("--structure", required=True)
  p.add_argument("--texture", required=True)
  p.add_argument("--mask", required=True, help="image: white = texture swapped, black = kept (any size)")
  p = add("edit", cmd_edit, "move the texture code along a direction", "strip image (.png)")
  p.add_argument("--image", required=True)
  p.add_argument("--direction", required=True, help="pca:K (K-th principal direction of --folder) or a .npy")
  p.add_argument("--amount", type=cli.nonnegative_float, required=True, help="largest move (pca: in stds)")
  p.add_argument("--steps", type=cli.at_least(2), default=5, help="amounts evenly spaced in [-amount, amount]")
  p.add_argument("--folder", default=None, help="images whose texture codes give the pca directions")
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  compile_cache.enable()  # a second call starts in seconds (JAXGEAL_COMPILATION_CACHE=off: no cache)
  try:
    args.fn(args)
  except (OSError, ValueError) as e:  # ModelNotFoundError is an OSError; UsageError a ValueError.
    cli.print_error(cli.error_line(e))
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
