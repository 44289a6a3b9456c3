"""How well a Swapping Autoencoder swaps, against exact ground truth (no downloads).

The synthetic heads (`jaxgeal.datasets.synthetic`) separate what a Swapping Autoencoder's two codes should hold:
a render's pose and shape (similarity, deformation, mirror) come from its own (seed, index), its appearance
(colours, fur texture, lighting, background) from `RenderOptions.appearance_of`. So for held-out renders A and
B the true hybrid "structure of A, texture of B" is `render(A's index, appearance_of=B's)`. For each pair this
module scores swap(A, B) against that truth, beside the answers that need no model (copy A, copy B) and the
autoencoder's reconstructions of A and of B, by mean absolute error, PSNR and the multi-scale local-contrast
distance of the alignment demo (`losses.gangealing.LocalContrastDistance`: structure, not colour), and by l1 on
the truth's silhouette alone (`object_l1`), where B's background cannot help copying B. It also
scores the reconstructions of A against A (Park et al. 2020, §4: reconstruction quality).

Pixel distances to the truth also charge a candidate for texture it cannot know exactly (where B's spots
fall), so the structure of each candidate is scored on its own by key points: a detector trained on renders of
every appearance (`jaxgeal.evaluation.keypoint_detector`, colour-blind by construction) finds A's key points in
it, and PCK counts those within alpha x the larger side of A's bounding box (`structure_pck`; the detector's
PCK on the truth itself is its ceiling, copying B is what a pose-blind answer scores).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from jaxgeal.datasets import synthetic
from jaxgeal.losses.gangealing import LocalContrastDistance

CANDIDATES = ("swap", "copy_structure", "copy_texture", "rec_structure", "rec_texture")


@dataclasses.dataclass(frozen=True)
class SwapPairs:
  """Held-out pairs: structure images A, texture images B and the true hybrids, (N, S, S, 3) in [-1, 1]."""

  structure: np.ndarray
  texture: np.ndarray
  truth: np.ndarray
  pairs: np.ndarray  # (N, 2) render indices (A, B)
  keypoints: np.ndarray  # (N, P, 2) x, y pixels of A's (and the truth's) key points
  visibility: np.ndarray  # (N, P) bool
  bbox: np.ndarray  # (N, 4) x0, y0, x1, y1 of A's silhouette
  mask: np.ndarray  # (N, S, S) coverage of A's (and the truth's) silhouette, in [0, 1]


def hybrid_render(seed: int, structure: int, texture: int, size: int, options: synthetic.RenderOptions) -> dict:
  """The true swap: `synthetic.render` of `structure` of `seed` in the appearance of render `texture`."""
  return synthetic.render(seed, structure, size, dataclasses.replace(options, appearance_of=(seed, texture)))


def hybrid(seed: int, structure: int, texture: int, size: int, options: synthetic.RenderOptions) -> np.ndarray:
  """The true swap's image (see hybrid_render)."""
  return hybrid_render(seed, structure, texture, size, options)["image"]


def render_pairs(num_pairs: int, size: int, seed: int, options: synthetic.RenderOptions) -> SwapPairs:
  """`num_pairs` pairs (A, B) of renders of `seed` (A != B, indices drawn from their own stream), with the
  true hybrid of each: A's pose and shape in B's appearance."""
  rng = np.random.default_rng([seed, 0x53574150])  # "SWAP": apart from every render's stream
  a = rng.integers(0, 4 * num_pairs, num_pairs)
  b = (a + rng.integers(1, 4 * num_pairs, num_pairs)) % (4 * num_pairs)
  one = lambda i: synthetic.render(seed, int(i), size, options)["image"]
  truths = [hybrid_render(seed, int(i), int(j), size, options) for i, j in zip(a, b)]
  return SwapPairs(
    structure=np.stack([one(i) for i in a]),
    texture=np.stack([one(j) for j in b]),
    truth=np.stack([t["image"] for t in truths]),
    pairs=np.stack([a, b], 1),
    keypoints=np.stack([t["keypoints"] for t in truths]),
    visibility=np.stack([t["visibility"] for t in truths]),
    bbox=np.stack([t["bbox"] for t in truths]),
    mask=np.stack([t["mask"] for t in truths]),
  )


def structure_pck(candidates, data: SwapPairs, detect: Callable, alphas=(0.05, 0.1)) -> dict[str, float]:
  """PCK@alpha of A's visible key points as `detect` (images -> (N, P, 2) x, y pixels; a colour-blind detector,
  `jaxgeal.evaluation.keypoint_detector`) finds them in the candidates: within alpha x the larger side of A's
  bounding box."""
  found = np.asarray(detect(candidates))
  error = np.linalg.norm(found - data.keypoints, axis=-1)
  side = np.max(data.bbox[:, 2:] - data.bbox[:, :2], axis=-1)[:, None]
  return {f"{a:g}": float(np.sum((error <= a * side) & data.visibility) / np.sum(data.visibility)) for a in alphas}


def psnr(x, y) -> np.ndarray:
  """Per image, images in [-1, 1] (peak-to-peak 2)."""
  mse = np.mean(np.square(np.asarray(x, np.float64) - np.asarray(y, np.float64)), axis=(1, 2, 3))
  return 10 * np.log10(4.0 / np.maximum(mse, 1e-12))


def distances(x, y, perceptual: Callable | None = None) -> dict[str, np.ndarray]:
  """Per-image {"l1", "psnr", "lcn"} between image batches in [-1, 1] (l1 in [0, 2] units of the images)."""
  perceptual = perceptual or LocalContrastDistance()
  return {
    "l1": np.mean(np.abs(np.asarray(x) - np.asarray(y)), axis=(1, 2, 3)),
    "psnr": psnr(x, y),
    "lcn": np.asarray(perceptual(jnp.asarray(x), jnp.asarray(y))),
  }


def object_l1(x, y, mask) -> np.ndarray:
  """Per image, the mean absolute error over the object only: pixels weighted by the silhouette coverage
  `mask` (N, S, S). There the truth is A's shape in B's colours, so neither copy can be right by chance (the
  whole-image l1 credits copying B with B's background, most of a small picture)."""
  err = np.mean(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)), axis=-1)
  return np.sum(err * mask, axis=(1, 2)) / np.maximum(np.sum(mask, axis=(1, 2)), 1e-12)


def _summary(values: dict[str, np.ndarray]) -> dict:
  return {k: {"mean": float(np.mean(v)), "sem": float(np.std(v) / np.sqrt(len(v)))} for k, v in values.items()}


def evaluate(autoencoder, data: SwapPairs, detect: Callable | None = None, batch_size: int = 32) -> dict:
  """Scores of swap(A, B) and the baselines against the truth, and of reconstruction; `autoencoder` has
  `encode(images) -> (structure, texture)` and `decode(structure, texture) -> images` (jaxgeal.swap's
  SwappingAutoencoder); `detect` (images -> key points, see `structure_pck`) adds the key point scores.
  Returns {"vs_truth": {candidate: {metric: {mean, sem}}}, "structure_pck": {candidate or "truth": {alpha:
  PCK}} (with `detect`), "reconstruction": ..., "wins": {baseline: fraction of pairs where the swap is nearer the truth
  by l1}, "object_l1": {candidate: {mean, sem}} (l1 on the truth's silhouette, `object_l1`), "wins_object",
  "num_pairs"}."""
  outs = {k: [] for k in ("swap", "rec_structure", "rec_texture")}
  for i in range(0, len(data.structure), batch_size):
    a, b = data.structure[i : i + batch_size], data.texture[i : i + batch_size]
    (sa, ta), (sb, tb) = autoencoder.encode(a), autoencoder.encode(b)
    outs["swap"].append(np.asarray(autoencoder.decode(sa, tb)))
    outs["rec_structure"].append(np.asarray(autoencoder.decode(sa, ta)))
    outs["rec_texture"].append(np.asarray(autoencoder.decode(sb, tb)))
  images = {k: np.concatenate(v) for k, v in outs.items()}
  images.update(copy_structure=data.structure, copy_texture=data.texture)
  per = {name: distances(images[name], data.truth) for name in CANDIDATES}
  wins = {name: float(np.mean(per["swap"]["l1"] < per[name]["l1"])) for name in CANDIDATES[1:]}
  obj = {name: object_l1(images[name], data.truth, data.mask) for name in CANDIDATES}
  result = {
    "num_pairs": len(data.truth),
    "vs_truth": {name: _summary(per[name]) for name in CANDIDATES},
    "reconstruction": _summary(distances(images["rec_structure"], data.structure)),
    "wins": wins,
    "object_l1": {name: _summary({"l1": obj[name]})["l1"] for name in CANDIDATES},
    "wins_object": {name: float(np.mean(obj["swap"] < obj[name])) for name in CANDIDATES[1:]},
  }
  if detect is not None:
    images["truth"] = data.truth
    result["structure_pck"] = {name: structure_pck(images[name], data, detect) for name in (*CANDIDATES, "truth")}
  return result


def markdown(result: dict, title: str = "Swapping on held-out synthetic pairs") -> str:
  """The result as a markdown table (what benchmarks/swapping.md shows)."""
  pck = result.get("structure_pck", {})
  alphas = list(pck.get("swap", {}))
  lines = [
    f"### {title}",
    "",
    f"{result['num_pairs']} pairs (A, B); truth = A's pose and shape in B's appearance, rendered exactly. "
    "Lower l1 / lcn and higher PSNR are nearer the truth; +- one standard error.",
    "",
    "l1 (object): on the truth's silhouette only, where the truth is A's shape in B's colours.",
    "",
  ]
  if pck:
    t = pck["truth"]
    lines += [
      "PCK: A's visible key points found in the candidate by a detector trained on renders of every appearance "
      "(colour-blind), within alpha x the larger side of A's box. On the truth itself it scores "
      + ", ".join(f"PCK@{a} {t[a]:.3f}" for a in alphas)
      + "; copy_texture (B's pose) is what an answer blind to A's pose scores.",
      "",
    ]
  head = ["candidate", "l1", "PSNR (dB)", "lcn", "swap nearer (l1)", "l1 (object)", "swap nearer (object)"]
  head += [f"PCK@{a}" for a in alphas]
  lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name in CANDIDATES:
    m = result["vs_truth"][name]
    win = "" if name == "swap" else f"{100 * result['wins'][name]:.0f} % of pairs"
    o = result.get("object_l1", {}).get(name)
    obj = "" if o is None else f"{o['mean']:.4f} +- {o['sem']:.4f}"
    obj_win = "" if name == "swap" or "wins_object" not in result else f"{100 * result['wins_object'][name]:.0f} %"
    row = [
      name,
      f"{m['l1']['mean']:.4f} +- {m['l1']['sem']:.4f}",
      f"{m['psnr']['mean']:.2f} +- {m['psnr']['sem']:.2f}",
      f"{m['lcn']['mean']:.4f} +- {m['lcn']['sem']:.4f}",
      win,
      obj,
      obj_win,
      *(f"{pck[name][a]:.3f}" for a in alphas),
    ]
    lines.append("| " + " | ".join(row) + " |")
  r = result["reconstruction"]
  lines += [
    "",
    f"Reconstruction of A: l1 {r['l1']['mean']:.4f}, PSNR {r['psnr']['mean']:.2f} dB, lcn {r['lcn']['mean']:.4f}.",
  ]
  return "\n".join(lines) + "\n"
