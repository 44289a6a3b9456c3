"""Alignment quality on the synthetic category with exact ground truth: PCK-Transfer (Peebles et al. 2022,
§4.2 and App. B.7) on held-out renders for the ablations of the paper's Table 3 that fit a CPU:

  no alignment                 A's key points at the same pixels of B
  ground-truth similarity      the renderer's warps without their deformation (a similarity STN's best)
  similarity STN, learned c    GANgealing with the similarity transformer only
  similarity + flow, fixed c   the target latent frozen at its initialisation (the mean W latent)
  similarity + flow, learned c the full method (what `configs/demo.py` trains)
  ..., paper's loss only       without the demo's equivariance term (jaxgeal.losses.gangealing.
                               equivariance_loss): the paper's objective alone (learned c and fixed c)
  ..., zoom-neutral            the equivariance term's zoom-neutral form (loss.equivariance_zoom_neutral)
  unconstrained c              c free in every principal direction of W (ll.ndirs = W's width), the paper's
                               "unconstrained c optimization" row

Every method trains on the same generator (the demo's: `configs/demo.py` ships one trained by
`configs/demo.py:train_gan`) with the demo's GANgealing settings, so rows differ only in the ablated part.
Writes `<workdir>/<method>/` (resumable stages) and the report (default `benchmarks/alignment.md`).
`benchmarks/alignment.md` as committed was made with `--methods` (its header says which; the fixed-c
zoom-neutral row is not in it yet).

  .venv/bin/python benchmarks/alignment.py --workdir /tmp/alignment   # ~1.5 h on 2 cores (8 x 6000 steps)
  .venv/bin/python benchmarks/alignment.py --workdir /tmp/a --config configs/demo.py:tiny --out /tmp/a.md

Unconstrained c on the demo, two seeds (alignment_unconstrained_c.md; compare with alignment.md's learned c):

  .venv/bin/python benchmarks/alignment.py --workdir /tmp/alignment \
      --methods flow_unconstrained_c,flow_unconstrained_c@1 --out benchmarks/alignment_unconstrained_c.md

The harder category (`configs/demo.py:complex`: clutter, wider rotation; its generator is the shipped one
fine-tuned on those renders), fixed versus learned c with a second training seed (alignment_complex.md):

  .venv/bin/python benchmarks/alignment.py --workdir /tmp/cx --config configs/demo.py:complex --methods \
      flow,flow@1,flow_fixed_c,flow_fixed_c@1,flow_paper_loss,flow_fixed_c_paper_loss \
      --out benchmarks/alignment_complex.md

Two framings (`configs/demo.py:closeup`: half the renders are close-ups; generator fine-tuned likewise), fixed
versus learned c under both forms of the equivariance term (alignment_closeup.md; ~30-40 min of fine-tuning,
then 6 x 6000 steps):

  .venv/bin/python benchmarks/alignment.py --workdir /tmp/cu --config configs/demo.py:closeup --methods \
      flow,flow@1,flow_fixed_c,flow_fixed_c@1,flow_zoom_neutral,flow_fixed_c_zoom_neutral \
      --out benchmarks/alignment_closeup.md

Two poses (`configs/demo.py:bimodal`: heads lean 45-75 deg left or right, none upright; generator fine-tuned
likewise), fixed versus learned c with the zoom-neutral term (alignment_bimodal.md):

  .venv/bin/python benchmarks/alignment.py --workdir /tmp/bm --config configs/demo.py:bimodal --methods \
      flow_zoom_neutral,flow_fixed_c_zoom_neutral --out benchmarks/alignment_bimodal.md

Two unequal poses (`configs/demo.py:lopsided`: 70% lean clockwise, 30% counter-clockwise), the same pair
(alignment_lopsided.md):

  .venv/bin/python benchmarks/alignment.py --workdir /tmp/lop --config configs/demo.py:lopsided --methods \
      flow_zoom_neutral,flow_fixed_c_zoom_neutral --out benchmarks/alignment_lopsided.md
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import pathlib
import platform
import time

import jax
import ml_collections
import numpy as np

from jaxgeal.ops import points as pts
from jaxgeal.trainers import config_variants, demo

REPO = pathlib.Path(__file__).resolve().parents[1]
ORACLE = "ground-truth similarity (upper bound of any similarity STN)"

# (row name, directory, overrides of config.gangealing); None = the identity baseline.
METHODS = (
  ("no alignment", None, None),
  ("similarity STN, learned c", "similarity", {"stn.transform": ("similarity",)}),
  ("similarity + flow, fixed c", "flow_fixed_c", {"ll.freeze": True}),
  ("similarity + flow, learned c", "flow", {}),
  (
    "similarity + flow, learned c, paper's loss only (no equivariance term)",
    "flow_paper_loss",
    {"loss.equivariance_weight": 0.0},
  ),
  (
    "similarity + flow, fixed c, paper's loss only (no equivariance term)",
    "flow_fixed_c_paper_loss",
    {"ll.freeze": True, "loss.equivariance_weight": 0.0},
  ),
  (
    "similarity STN, learned c, zoom-neutral equivariance",
    "similarity_zoom_neutral",
    {"stn.transform": ("similarity",), "loss.equivariance_zoom_neutral": True},
  ),
  (
    "similarity + flow, fixed c, zoom-neutral equivariance",
    "flow_fixed_c_zoom_neutral",
    {"ll.freeze": True, "loss.equivariance_zoom_neutral": True},
  ),
  (
    "similarity + flow, learned c, zoom-neutral equivariance",
    "flow_zoom_neutral",
    {"loss.equivariance_zoom_neutral": True},
  ),
  # The paper's Table 3 "unconstrained c optimization" (N = 512 = all of W; PCK 0.34% there): c free in every
  # principal direction of W instead of the top one.
  (
    "similarity + flow, unconstrained c (all W directions)",
    "flow_unconstrained_c",
    {"ll.ndirs": lambda config: config.stylegan2.model.style_dim},
  ),
)


def load_config(spec: str) -> ml_collections.ConfigDict:
  return config_variants.load_config(REPO / spec)  # an absolute spec stays as it is


def with_overrides(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  """A copy of `config` with `{"dotted.key.of.gangealing": value}` set; a callable value is called with `config`
  (for settings that follow another part of it, such as the generator's W width)."""
  c = ml_collections.ConfigDict(config.to_dict())
  for dotted, value in overrides.items():
    node = c.gangealing
    *parents, leaf = dotted.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value(config) if callable(value) else value
  return c


def rigid(warp):
  """The renderer's warp without its non-rigid deformation: the similarity a similarity STN should undo."""
  return dataclasses.replace(warp, amps=np.zeros_like(warp.amps))


def ground_truth_similarity_transfer(dataset):
  """The best a similarity STN can do: transfer through the renderer's own warps with the non-rigid
  deformation removed (what is left is the deformation's error)."""
  key = lambda im: hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest()
  index = {key(im): i for i, im in enumerate(dataset["images"])}
  warps = [rigid(w) for w in dataset["warps"]]

  def transfer(images_a, images_b, kps_a):
    return np.stack(
      [
        warps[index[key(b)]].to_image(warps[index[key(a)]].to_canonical(np.asarray(k, np.float64)))
        for a, b, k in zip(np.asarray(images_a), np.asarray(images_b), np.asarray(kps_a))
      ]
    )

  return transfer


def pose_left(matrices, dataset) -> dict:
  """How much of the renderer's similarity a similarity STN leaves uncorrected (a diagnostic: PCK says how well,
  this says which part fails). matrices: (N, 2, 3) maps of the congealed frame's normalised coordinates to the
  input's (`Aligner.congeal(...)["matrix"]`; identity = no alignment). Each image's congealed frame is mapped to
  the canonical frame through its deformation-free warp; a perfect similarity STN makes these maps equal for all
  images. Returns their spread over images: angle (degrees), log scale, and the congealed centre's canonical
  position expressed in pixels (canonical units x mean warp scale). For unmirrored renders (the demo's): with
  flip inference a matrix refers to the mirrored input.
  """
  m = np.asarray(matrices, np.float64)
  size = dataset["images"].shape[1]
  u = np.array([[0.0, 0.0], [0.5, 0.0]])  # congealed centre and a point to its right
  x = np.einsum("nij,pj->npi", m[:, :, :2], u) + m[:, None, :, 2]
  q = np.stack([rigid(w).to_canonical(p) for w, p in zip(dataset["warps"], pts.unnormalize_points(x, size, size))])
  d = q[:, 1] - q[:, 0]
  mean_scale = np.mean([w.scale for w in dataset["warps"]])
  return {
    "angle_left_deg": float(np.rad2deg(np.arctan2(d[:, 1], d[:, 0])).std()),
    "log_scale_left": float(np.log(np.hypot(d[:, 0], d[:, 1])).std()),
    "shift_left_px": float(np.linalg.norm(q[:, 0].std(0)) * mean_scale),
  }


def target_offset(coefficients, directions, w) -> float:
  """How far the learned target latent c moved from the PCA mean (its start), in standard deviations of W along
  each of the latent learner's directions (Mahalanobis over them; a W sample lies ~sqrt(ndirs) away on average).
  coefficients: (K, ndirs), directions: (ndirs, D) orthonormal rows, w: (N, D) samples of W. Largest over heads."""
  std = ((w - w.mean(0)) @ np.asarray(directions).T).std(0)
  return float(np.linalg.norm(np.asarray(coefficients) / std, axis=-1).max())


def model_target_offset(model_dir: pathlib.Path, num_samples: int = 20000) -> float:
  """`target_offset` of an exported GANgealing model (its `ll` and `g_ema`), with W sampled from its generator."""
  from jaxgeal import checkpoint
  from jaxgeal.models import stylegan2

  models = checkpoint.load_models(model_dir)
  _, gcfg, g_vars = models["g_ema"]
  ll_vars = models["ll"][2]
  G = stylegan2.generator_from_config(gcfg)
  z = jax.random.normal(jax.random.PRNGKey(0), (num_samples, gcfg["style_dim"]))
  w = np.asarray(jax.jit(lambda v, z: G.apply(v, z, method=G.mapping))(g_vars, z))
  return target_offset(ll_vars["params"]["coefficients"], ll_vars["pca"]["directions"], w)


def training_seconds(metrics: pathlib.Path) -> float:
  """Wall time of a training run from its metrics.jsonl: the logged intervals (steps / steps_per_s) summed, so
  time between an interruption and its resume does not count (a re-logged step keeps its last row)."""
  rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
  rows = sorted({r["step"]: r for r in rows if r.get("steps_per_s", 0) > 0}.values(), key=lambda r: r["step"])
  if not rows:
    return float("nan")
  steps = np.diff([0] + [r["step"] for r in rows])
  return float(sum(n / r["steps_per_s"] for n, r in zip(steps, rows)))


def selected(methods=None) -> list:
  """(row name, directory, overrides) for `methods`: stage directories of METHODS in the order given, each
  optionally as DIR@SEED (another training seed of that stage: directory DIR_seedSEED), after the no-alignment
  baseline; None: all METHODS. Raises ValueError naming an unknown directory or a non-integer seed."""
  if methods is None:
    return list(METHODS)
  by_dir = {d: (n, d, o) for n, d, o in METHODS if d}
  rows = [m for m in METHODS if m[1] is None]
  for token in methods:
    subdir, _, seed = token.partition("@")
    if subdir not in by_dir or (seed and not seed.isdigit()):
      raise ValueError(f"unknown method {token!r}: use one of {sorted(by_dir)}, optionally as DIR@SEED")
    name, subdir, overrides = by_dir[subdir]
    if seed:
      name, subdir, overrides = f"{name}, seed {seed}", f"{subdir}_seed{seed}", {**overrides, "seed": int(seed)}
    rows.append((name, subdir, overrides))
  return rows


def run(config, workdir: pathlib.Path, methods=None) -> tuple[list, dict]:
  """Trains (or reuses) and scores the `selected(methods)` stages (the no-alignment baseline and the
  ground-truth similarity always)."""
  workdir.mkdir(parents=True, exist_ok=True)
  seconds = {}
  t = time.perf_counter()
  source = demo.prepare_data(config, workdir) if demo.shipped_generator(config) is None else None
  generator = demo.train_stylegan2(config, workdir, source)
  seconds["data + generator"] = time.perf_counter() - t
  dataset = demo.heldout_dataset(config, workdir)
  rows = []
  for name, subdir, overrides in selected(methods):
    t = time.perf_counter()
    if subdir is None:
      res = demo.evaluate(demo.identity_transfer, dataset, num_bootstrap=config.get("num_bootstrap", 200))
      res.update(pose_left(np.broadcast_to(np.eye(2, 3), (len(dataset["images"]), 2, 3)), dataset))
    else:
      c = with_overrides(config, overrides)
      model = demo.train_gangealing(c, workdir, generator, name=subdir)
      aligner = demo.load_aligner(model, c.gangealing.test.padding_mode)
      res = demo.evaluate(aligner, dataset, num_bootstrap=config.get("num_bootstrap", 200))
      res.update(pose_left(aligner.congeal(dataset["images"])["matrix"], dataset))
      res["target_offset_std"] = model_target_offset(model)
    seconds[name] = time.perf_counter() - t
    if subdir is not None:
      res["train_seconds"] = training_seconds(workdir / subdir / "metrics.jsonl")
    rows.append((name, res))
    logging.info("%s: %s", name, res)
  rows.append(
    (
      ORACLE,
      demo.evaluate(ground_truth_similarity_transfer(dataset), dataset, num_bootstrap=config.get("num_bootstrap", 200)),
    )
  )
  return rows, seconds


def write_report(path: pathlib.Path, config, rows, seconds, command: str):
  g, d = config.gangealing, config.data
  lines = [
    "# Alignment on the synthetic category (PCK-Transfer, exact ground truth)",
    "",
    f"Regenerated by `{command}`; do not edit by hand.",
    "",
    f"Held-out renders: {d.num_heldout} images (seed {d.heldout_seed}), {d.num_pairs} fixed pairs, "
    f"{d.size} px, threshold alpha * max(bbox width, height) (alpha_bbox, as SPair-71k). "
    f"Render settings: {dict(d.render)}.",
    f"Generator: StyleGAN2 {config.stylegan2.model.size} px ({demo.generator_source(config)}). "
    f"GANgealing: {g.total_steps} steps, batch {g.batch_size}, perceptual loss `{g.perceptual.kind}`, "
    f"psi annealed over {g.optim.anneal_psi} steps, STN flow at {g.stn.flow_size} px, "
    f"target injected into the first {g.ll.inject} W+ layers, equivariance term weight "
    f"{g.loss.get('equivariance_weight', 0.0):g} (not in the paper; rows without it say so).",
    "",
    "| method | PCK@0.1 | PCK@0.05 | PCK@0.01 | training (s) | pose left: angle (°) / log scale / shift (px) "
    "| c moved (W std) |",
    "|---|---|---|---|---|---|---|",
  ]
  for name, r in rows:
    cell = lambda k, r=r: f"{r[k]:.3f} ± {r[k + '_std']:.3f}" if f"{k}_std" in r else f"{r[k]:.3f}"
    train = f"{r['train_seconds']:.0f}" if "train_seconds" in r else "-"
    pose = (
      f"{r['angle_left_deg']:.1f} / {r['log_scale_left']:.3f} / {r['shift_left_px']:.2f}"
      if "angle_left_deg" in r
      else "-"
    )
    moved = f"{r['target_offset_std']:.2f}" if "target_offset_std" in r else "-"
    lines.append(
      f"| {name} | {cell('pck@0.1')} | {cell('pck@0.05')} | {cell('pck@0.01')} | {train} | {pose} | {moved} |"
    )
  lines += [
    "",
    "± is the bootstrap standard deviation over pairs (App. B.7's error bars). Pose left: the spread over",
    "held-out images of the renderer's similarity (rotation, scale, shift; deformation excluded) that the",
    "STN's similarity part leaves uncorrected (0 = every head in one pose; the no-alignment row is the",
    "renderer's own spread). The flow's share of the alignment is not in it. Training (s): wall time from",
    "each stage's metrics.jsonl, inflated where stages shared the machine (they may run concurrently).",
    "c moved: distance of the learned target latent from the mean latent it starts at, in standard",
    "deviations of W along the directions c may move in (Mahalanobis; a W sample lies ~sqrt(ndirs) away).",
    "",
    "Wall times (s, 0 = stage reused from the workdir): " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()),
    f"Machine: {platform.processor() or platform.machine()}, jax {jax.__version__} "
    f"({jax.default_backend()}, {jax.device_count()} device(s)).",
    "",
  ]
  path.write_text("\n".join(lines))
  path.with_suffix(".json").write_text(json.dumps({n: r for n, r in rows}, indent=1))


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
  )
  p.add_argument("--workdir", required=True, help="stages are kept here; re-running resumes")
  p.add_argument("--config", default="configs/demo.py", help="a demo config, optionally with :variant")
  p.add_argument("--out", default=str(REPO / "benchmarks" / "alignment.md"))
  p.add_argument(
    "--methods",
    default=None,
    help="comma-separated stage directories to run, each optionally as "
    "DIR@SEED for another training seed (default: all of " + ", ".join(d for _, d, _ in METHODS if d) + ")",
  )
  return p


def main(argv=None):
  p = build_parser()
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  methods = args.methods.split(",") if args.methods else None
  try:
    selected(methods)
  except ValueError as e:
    p.error(f"--methods: {e}")
  config = load_config(args.config)
  rows, seconds = run(config, pathlib.Path(args.workdir), methods)
  command = f"python benchmarks/alignment.py --config {args.config}"
  if args.methods:
    out = pathlib.Path(args.out).resolve()
    command += f" --methods {args.methods} --out {out.relative_to(REPO) if out.is_relative_to(REPO) else out}"
  write_report(pathlib.Path(args.out), config, rows, seconds, command)
  print(pathlib.Path(args.out).read_text())


if __name__ == "__main__":
  main()
