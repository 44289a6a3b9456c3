"""End-to-end demo on the synthetic heads: data -> StyleGAN2 -> GANgealing -> PCK-Transfer, on a CPU.

The paper's pipeline (Peebles et al., CVPR 2022): a StyleGAN2 is trained on unaligned images of a category
(§3, "we use StyleGAN2"), GANgealing trains a Spatial Transformer on GAN-generated pairs (§3, eq. 5), and
dense correspondence is measured by PCK-Transfer on held-out real images (§4.2, App. B.7): congeal image A's
key points, uncongeal them into B. Here the category is `jaxgeal.datasets.synthetic` (procedural animal
heads with exact key points), at a small size so the whole run fits in minutes on two CPU cores.

Stages, each in its own directory under the workdir and skipped when its output exists (re-running resumes):

  data/        rendered train images (prepared with `build_image_folder`) + `heldout.json` marker
  stylegan2/   `jaxgeal.trainers.stylegan2` on the prepared images; exports stylegan2/model (g_ema)
  gangealing/  `jaxgeal.trainers.gangealing` with that generator frozen; exports gangealing/model (t_ema)
  heldout/     held-out renders (seed `data.heldout_seed`) as PNGs + annotations.json (exact key points, pairs)
  average.png, grid.png, pck.json, report.md   evaluation on heldout/ (the PCK CLI reproduces pck.json:
               python -m jaxgeal.evaluation.pck --model W/gangealing/model --annotations W/heldout --no_flip)

Perceptual loss: no pretrained VGG is available offline, so the GANgealing stage uses `config.gangealing.
perceptual.kind` (default "lcn", locally contrast-normalised MSE; see LocalContrastDistance); pck.json and
report.md record it. The generator is the one jaxgeal ships (config.stylegan2.pretrained) unless the config
sets None (`:train_gan`, `:tiny`), in which case data/ and stylegan2/ are made in the run.

  python -m jaxgeal.main --config=configs/demo.py --workdir=/tmp/demo         # about 10 min on 2 cores
  python -m jaxgeal.main --config=configs/demo.py:tiny --workdir=/tmp/demo-t  # smoke test
"""

from __future__ import annotations

import json
import logging
import pathlib
import time

import ml_collections
import numpy as np

from jaxgeal import checkpoint, distributed, images, storage
from jaxgeal.align import Aligner, visualize
from jaxgeal.datasets import synthetic
from jaxgeal.evaluation import pck
from jaxgeal.trainers import resume

_LOSS_NOTES = {
  "lcn": "no pretrained VGG is available offline: multi-scale MSE of locally contrast-normalised images "
  "stands in for the paper's VGG-SSL/LPIPS; plain MSE let colour dominate and did not align",
  "mse": "no pretrained VGG is available offline: MSE in pixel space stands in for the paper's VGG-SSL/LPIPS",
  "vgg_ssl": "the paper's SimCLR VGG16 features",
  "lpips": "LPIPS v0.1 (VGG16)",
}
ASSETS = pathlib.Path(__file__).resolve().parents[1] / "assets"


# -- stages -------------------------------------------------------------------------------------------------


def prepare_data(config, workdir: pathlib.Path) -> str:
  """Renders the training images and prepares them; returns the prepared dataset path."""
  from jaxgeal.datasets import image_folder

  d = config.data
  marker = workdir / "data" / "prepared.json"
  if not distributed.is_primary():  # several processes: process 0 renders, the others read what it wrote
    distributed.barrier("jaxgeal.trainers.demo.prepare_data")
    return json.loads(marker.read_text())["path"]
  if marker.exists():
    distributed.barrier("jaxgeal.trainers.demo.prepare_data")
    return json.loads(marker.read_text())["path"]
  logging.info("rendering %d training images at %d px", d.num_train, d.size)
  options = synthetic.RenderOptions(**d.render)
  synthetic.write_folder(workdir / "data" / "images", d.num_train, d.size, d.seed, options)
  report = image_folder.build_image_folder(
    workdir / "data" / "images", workdir / "data" / "prepared", size=d.size, overwrite=True
  )
  marker.write_text(json.dumps({"path": report.path}))
  distributed.barrier("jaxgeal.trainers.demo.prepare_data")
  return report.path


def heldout_dataset(config, workdir: pathlib.Path) -> dict:
  """Held-out renders (another seed) with exact key points and fixed pairs, written as `workdir/heldout/`
  (PNGs + annotations.json: what `python -m jaxgeal.evaluation.pck --model ... --annotations` reads) and read
  back from there, so the demo scores exactly what a user re-scores. Also returns each render's `warps`."""
  d = config.data
  folder = workdir / "heldout"
  options = synthetic.RenderOptions(**d.render)
  spec = synthetic.generator_spec(d.num_heldout, d.size, d.heldout_seed, options, num_pairs=d.num_pairs)
  path = folder / "annotations.json"
  if not path.exists() or json.loads(path.read_text()).get("generator") != json.loads(json.dumps(spec)):
    synthetic.write_folder(folder, d.num_heldout, d.size, d.heldout_seed, options, num_pairs=d.num_pairs)
  ds = pck.load_annotations(path, load_images=True)
  ds["warps"] = [synthetic.Warp.from_json(e["warp"]) for e in json.loads(path.read_text())["images"]]
  return ds


def shipped_generator(config) -> pathlib.Path | None:
  """The generator the project trained and ships (config.stylegan2.pretrained, relative to the package),
  checked against config.stylegan2.model; None when the config trains its own."""
  name = config.stylegan2.get("pretrained")
  if not name:
    return None
  path = pathlib.Path(name)
  path = path if path.is_absolute() else ASSETS.parent / path
  if not (path / "model.json").exists():
    raise FileNotFoundError(
      f"the demo's shipped generator {path} is missing (model.json). Re-create it with "
      "`python -m jaxgeal.main --config=configs/demo.py:train_gan --workdir=DIR` and copy DIR/stylegan2/model "
      f"there, or train one in the run with config.stylegan2.pretrained=None"
    )
  want = config.stylegan2.model
  have = checkpoint.read_model_index(path)["models"]["g_ema"]["config"]
  for key in ("size", "style_dim", "n_mlp", "channels"):
    a, b = have.get(key), want.get(key)
    if json.dumps(a) != json.dumps(b if not isinstance(b, tuple) else [list(x) for x in b]):
      raise ValueError(
        f"shipped generator {path} has {key}={a}, config.stylegan2.model has {b}: set "
        "config.stylegan2.pretrained=None to train a generator of this shape"
      )
  return path


def generator_source(config) -> str:
  path = shipped_generator(config)
  if path is not None:
    return (
      f"shipped with jaxgeal ({path.relative_to(ASSETS.parent)}), trained by `configs/demo.py:train_gan`: "
      f"{config.stylegan2.total_steps} steps, batch {config.stylegan2.batch_size}, "
      f"{config.data.num_train} renders"
    )
  how = (
    f"fine-tuned in this run from {config.stylegan2.init_from}"
    if config.stylegan2.get("init_from")
    else "trained in this run"
  )
  return (
    f"{how}: {config.stylegan2.total_steps} steps, batch {config.stylegan2.batch_size}, {config.data.num_train} renders"
  )


def train_stylegan2(config, workdir: pathlib.Path, source: str | None) -> pathlib.Path:
  from jaxgeal.trainers import stylegan2

  shipped = shipped_generator(config)
  if shipped is not None:
    return shipped
  out = workdir / "stylegan2"
  c = ml_collections.ConfigDict(config.stylegan2.to_dict())
  c.data.source = source
  if c.get("init_from") and not pathlib.Path(c.init_from).is_absolute():  # fine-tune a shipped generator
    c.init_from = str(ASSETS.parent / c.init_from)
  if not resume.finished(out, c):
    stylegan2.train_and_evaluate(c, str(out))
  return out / "model"


def train_gangealing(config, workdir: pathlib.Path, generator: pathlib.Path, freeze=None, name="gangealing"):
  from jaxgeal.trainers import gangealing

  out = workdir / name
  c = ml_collections.ConfigDict(config.gangealing.to_dict())
  c.generator.checkpoint = str(generator)
  if freeze is not None:
    c.ll.freeze = freeze
  if not resume.finished(out, c):
    gangealing.train_and_evaluate(c, str(out))
  return out / "model"


# -- evaluation ---------------------------------------------------------------------------------------------


def load_aligner(model_dir, padding_mode: str = "border") -> Aligner:
  """The trained STN (t_ema) with the demo's test-time padding. No flip inference: the demo's renders are not
  mirrored (`data.render.mirror_prob`); `python -m jaxgeal.evaluation.pck --no_flip` is the same evaluation."""
  return Aligner.load(model_dir, padding_mode=padding_mode, flip=False)


def identity_transfer(images_a, images_b, kps_a):
  """The "no alignment" baseline: A's key points at the same pixels of B."""
  del images_a, images_b
  return np.asarray(kps_a)


def evaluate(transfer_fn, dataset, num_bootstrap: int = 0) -> dict:
  """PCK@0.1/0.05/0.01 (and `pck@a_std` bootstrap deviations when num_bootstrap > 1) on fixed pairs.
  `transfer_fn` is a function (images_a, images_b, kps_a) -> kps in B, or an `Aligner` (its transfer_points)."""
  if isinstance(transfer_fn, Aligner):
    transfer_fn = transfer_fn.transfer_points
  res = pck.pck_transfer(transfer_fn, dataset, pairs="fixed", num_bootstrap=num_bootstrap)
  keys = [f"pck@{a}{suffix}" for a in ("0.1", "0.05", "0.01") for suffix in ("", "_std")]
  return {k: float(res[k]) for k in keys if k in res}


def write_visuals(workdir: pathlib.Path, aligner: Aligner, dataset, n_vis: int):
  """average.png (mean congealed held-out image), grid.png (rows: inputs / congealed / A's key points
  transferred into each image from the first image, A; upscaled to >= 128 px per image)."""
  ims = dataset["images"]
  congealed = aligner.congeal(ims)["aligned"]
  images.save_image(workdir / "average.png", congealed.mean(0))
  n = min(n_vis, len(ims))
  src = np.broadcast_to(ims[:1], (n,) + ims.shape[1:])
  kps_a = np.where(dataset["visibility"][:1, :, None], dataset["keypoints"][:1], 0.0)
  pred = aligner.transfer_points(src, ims[:n], np.broadcast_to(kps_a, (n,) + kps_a.shape[1:]))
  vis = dataset["visibility"][0]
  up = max(1, 128 // ims.shape[1])  # nearest-neighbour upscaling so that 32 px pictures are legible
  big = lambda a: np.repeat(np.repeat(images.to_uint8(a), up, -3), up, -2)
  corr = np.stack(
    [
      visualize.draw_points(big(ims[i]), (pred[i] + 0.5) * up - 0.5, radius=max(1, up // 2), visible=vis)
      for i in range(n)
    ]
  )
  rows = np.concatenate([big(ims[:n]), big(congealed[:n]), corr])
  images.save_image(workdir / "grid.png", images.make_grid(rows, nrow=n))


def _equivariance_note(g) -> str:
  w = g.loss.get("equivariance_weight", 0.0)
  if not w:
    return "The paper's objective (no equivariance term)."
  form = ", zoom-neutral form" if g.loss.get("equivariance_zoom_neutral", False) else ""
  return (
    f"Besides the paper's objective, an equivariance term (weight {w:g}{form}, not in the paper; "
    "jaxgeal.losses.gangealing.equivariance_loss) asks the similarity STN to undo random similarities of "
    f"its input (up to {g.loss.equivariance_rotation:g} deg): the loss alone left most of the rotation."
  )


def write_report(workdir: pathlib.Path, config, results: dict, seconds: dict):
  g = config.gangealing
  lines = [
    "# jaxgeal demo: GANgealing on synthetic heads",
    "",
    f"StyleGAN2 {config.stylegan2.model.size} px, {generator_source(config)}; "
    f"GANgealing ({', '.join(g.stn.transform)}) {g.total_steps} steps, "
    f"batch {g.batch_size}; perceptual loss `{g.perceptual.kind}` ({_LOSS_NOTES.get(g.perceptual.kind, '')}).",
    _equivariance_note(g),
    "",
    f"PCK-Transfer on {config.data.num_pairs} fixed pairs of {config.data.num_heldout} held-out renders "
    "(alpha_bbox, exact key points):",
    "",
    "| method | PCK@0.1 | PCK@0.05 | PCK@0.01 |",
    "|---|---|---|---|",
  ]
  for name, r in (("no alignment", results["baseline_no_alignment"]), ("GANgealing", results)):
    lines.append(f"| {name} | {r['pck@0.1']:.3f} | {r['pck@0.05']:.3f} | {r['pck@0.01']:.3f} |")
  lines += [
    "",
    "Stage wall times (s; 0 = skipped, output existed): " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()),
    "",
    "Files: average.png (mean congealed held-out image), grid.png (inputs / congealed / key points of "
    "the first image transferred into each), pck.json, heldout/ (the scored renders and their key points).",
    "",
    "Re-score with the PCK CLI: `python -m jaxgeal.evaluation.pck --model "
    f"{workdir / 'gangealing' / 'model'} --annotations {workdir / 'heldout'} --no_flip`.",
    "",
  ]
  (workdir / "report.md").write_text("\n".join(lines))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  if storage.is_remote(workdir):  # It builds and reads its datasets in the workdir with local file APIs.
    raise ValueError(f"--workdir={workdir}: the GANgealing demo runs on one machine; give it a local work directory")
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  seconds = {}
  t = time.perf_counter()
  source = prepare_data(config, workdir) if shipped_generator(config) is None else None
  seconds["data"] = time.perf_counter() - t
  t = time.perf_counter()
  generator = train_stylegan2(config, workdir, source)
  seconds["stylegan2"] = time.perf_counter() - t
  t = time.perf_counter()
  model = train_gangealing(config, workdir, generator)
  seconds["gangealing"] = time.perf_counter() - t
  if not distributed.is_primary():  # the evaluation runs in one process, and process 0 writes its results
    return {}
  t = time.perf_counter()
  dataset = heldout_dataset(config, workdir)
  aligner = load_aligner(model, config.gangealing.test.padding_mode)
  results = evaluate(aligner, dataset)
  results["baseline_no_alignment"] = evaluate(identity_transfer, dataset)
  results.update(
    perceptual_loss=config.gangealing.perceptual.kind,
    equivariance_weight=float(config.gangealing.loss.get("equivariance_weight", 0.0)),
    num_pairs=int(config.data.num_pairs),
    num_heldout=int(config.data.num_heldout),
    image_size=int(config.data.size),
  )
  write_visuals(workdir, aligner, dataset, config.n_vis)
  seconds["evaluation"] = time.perf_counter() - t
  results["seconds"] = seconds
  (workdir / "pck.json").write_text(json.dumps(results, indent=1))
  write_report(workdir, config, results, seconds)
  logging.info(
    "PCK-Transfer %s (no alignment %s)",
    {k: results[k] for k in ("pck@0.1", "pck@0.05")},
    results["baseline_no_alignment"],
  )
  return results
