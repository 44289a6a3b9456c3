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

Pixel distances to the truth also charge a candidate for texture it cannot know exactly (where B's spots and
background noise fall), so the structure of each candidate is scored on its own by key points: every visible
key point of A (the truth's, as A and the truth share pose and shape) is looked for in the candidate by
template matching (`locate`), and PCK counts those found within alpha x the larger side of A's bounding box.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

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


def locate(candidates, truth, points, radius: int = 3, search: int = 6, sigma: float = 1.0) -> np.ndarray:
  """Where each point of the truth lies in the candidate image: the displacement within +-`search` px whose
  (2 radius + 1)^2 patch of the candidate correlates best (normalised cross-correlation over the patch's RGB
  values) with the truth's patch around the point. Both images are blurred by a Gaussian of `sigma` px first,
  so that texture detail no swap can know (which spot falls where) does not decide; ties go to the smaller
  displacement. candidates, truth (N, S, S, C); points (N, P, 2) x, y pixels -> found points (N, P, 2)."""
  n, size = truth.shape[:2]
  blur = lambda x: ndimage.gaussian_filter(np.asarray(x, np.float64), (0, sigma, sigma, 0))
  pad = radius + search
  padding = ((0, 0), (pad, pad), (pad, pad), (0, 0))
  cand, true = np.pad(blur(candidates), padding, mode="edge"), np.pad(blur(truth), padding, mode="edge")
  win = 2 * radius + 1
  offsets = np.arange(-search, search + 1)
  nearness = 1e-6 * np.hypot(offsets[:, None], offsets[None, :])  # breaks ties (flat patches) towards 0
  centre = np.clip(np.round(points).astype(int), 0, size - 1) + pad
  found = np.zeros(points.shape, np.float64)
  for i in range(n):
    for k, (x, y) in enumerate(centre[i]):
      t = true[i, y - radius : y + radius + 1, x - radius : x + radius + 1].reshape(-1)
      region = cand[i, y - pad : y + pad + 1, x - pad : x + pad + 1]
      patches = sliding_window_view(region, (win, win), axis=(0, 1))  # (2s+1, 2s+1, C, win, win)
      patches = patches.transpose(0, 1, 3, 4, 2).reshape(len(offsets), len(offsets), -1)
      t = t - t.mean()
      p = patches - patches.mean(-1, keepdims=True)
      ncc = p @ t / (np.linalg.norm(p, axis=-1) * np.linalg.norm(t) + 1e-8)
      dy, dx = np.unravel_index(np.argmax(ncc - nearness), ncc.shape)
      found[i, k] = points[i, k] + (offsets[dx], offsets[dy])
  return found


def structure_pck(candidates, data: SwapPairs, alphas=(0.1, 0.2)) -> dict[str, float]:
  """PCK@alpha of A's visible key points located in the candidates (see `locate`): found within alpha x the
  larger side of A's bounding box."""
  found = locate(candidates, data.truth, data.keypoints)
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


def evaluate(autoencoder, data: SwapPairs, batch_size: int = 32) -> dict:
  """Scores of swap(A, B) and the baselines against the truth, and of reconstruction; `autoencoder` has
  `encode(images) -> (structure, texture)` and `decode(structure, texture) -> images` (jaxgeal.swap's
  SwappingAutoencoder). Returns {"vs_truth": {candidate: {metric: {mean, sem}}}, "structure_pck": {candidate:
  {alpha: PCK}}, "reconstruction": ..., "wins": {baseline: fraction of pairs where the swap is nearer the truth
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
  return {
    "num_pairs": len(data.truth),
    "vs_truth": {name: _summary(per[name]) for name in CANDIDATES},
    "structure_pck": {name: structure_pck(images[name], data) for name in CANDIDATES},
    "reconstruction": _summary(distances(images["rec_structure"], data.structure)),
    "wins": wins,
    "object_l1": {name: _summary({"l1": obj[name]})["l1"] for name in CANDIDATES},
    "wins_object": {name: float(np.mean(obj["swap"] < obj[name])) for name in CANDIDATES[1:]},
  }


def markdown(result: dict, title: str = "Swapping on held-out synthetic pairs") -> str:
  """The result as a markdown table (what benchmarks/swapping.md shows)."""
  lines = [
    f"### {title}",
    "",
    f"{result['num_pairs']} pairs (A, B); truth = A's pose and shape in B's appearance, rendered exactly. "
    "Lower l1 / lcn and higher PSNR are nearer the truth; +- one standard error.",
    "",
    "PCK: A's visible key points found in the candidate (template matching of the truth's patches, "
    "within alpha x the larger side of A's box; copy_structure has A's structure in the wrong colours).",
    "",
    "l1 (object): on the truth's silhouette only, where the truth is A's shape in B's colours.",
    "",
    "| candidate | l1 | PSNR (dB) | lcn | swap nearer (l1) | l1 (object) | swap nearer (object) | PCK@0.1 | PCK@0.2 |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for name in CANDIDATES:
    m = result["vs_truth"][name]
    win = "" if name == "swap" else f"{100 * result['wins'][name]:.0f} % of pairs"
    pck = result.get("structure_pck", {}).get(name, {})
    o = result.get("object_l1", {}).get(name)
    obj = "" if o is None else f"{o['mean']:.4f} +- {o['sem']:.4f}"
    obj_win = "" if name == "swap" or "wins_object" not in result else f"{100 * result['wins_object'][name]:.0f} %"
    lines.append(
      f"| {name} | {m['l1']['mean']:.4f} +- {m['l1']['sem']:.4f} | {m['psnr']['mean']:.2f} +- "
      f"{m['psnr']['sem']:.2f} | {m['lcn']['mean']:.4f} +- {m['lcn']['sem']:.4f} | {win} | {obj} | {obj_win} | "
      f"{pck.get('0.1', float('nan')):.3f} | {pck.get('0.2', float('nan')):.3f} |"
    )
  r = result["reconstruction"]
  lines += [
    "",
    f"Reconstruction of A: l1 {r['l1']['mean']:.4f}, PSNR {r['psnr']['mean']:.2f} dB, lcn {r['lcn']['mean']:.4f}.",
  ]
  return "\n".join(lines) + "\n"
