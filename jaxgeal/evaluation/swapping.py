"""How well a Swapping Autoencoder swaps, against exact ground truth (no downloads).

The synthetic heads (`jaxgeal.datasets.synthetic`) separate what a Swapping Autoencoder's two codes should hold:
a render's pose and shape (similarity, deformation, mirror) come from its own (seed, index), its appearance
(colours, fur texture, lighting, background) from `RenderOptions.appearance_of`. So for held-out renders A and
B the true hybrid "structure of A, texture of B" is `render(A's index, appearance_of=B's)`. For each pair this
module scores swap(A, B) against that truth, beside the answers that need no model (copy A, copy B) and the
autoencoder's reconstructions of A and of B, by mean absolute error, PSNR and the multi-scale local-contrast
distance of the alignment demo (`losses.gangealing.LocalContrastDistance`: structure, not colour). It also
scores the reconstructions of A against A (Park et al. 2020, §4: reconstruction quality).
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


def hybrid(seed: int, structure: int, texture: int, size: int, options: synthetic.RenderOptions) -> np.ndarray:
  """The true swap: render `structure` of `seed` in the appearance of render `texture` of `seed`."""
  return synthetic.render(seed, structure, size, dataclasses.replace(options, appearance_of=(seed, texture)))["image"]


def render_pairs(num_pairs: int, size: int, seed: int, options: synthetic.RenderOptions) -> SwapPairs:
  """`num_pairs` pairs (A, B) of renders of `seed` (A != B, indices drawn from their own stream), with the
  true hybrid of each: A's pose and shape in B's appearance."""
  rng = np.random.default_rng([seed, 0x53574150])  # "SWAP": apart from every render's stream
  a = rng.integers(0, 4 * num_pairs, num_pairs)
  b = (a + rng.integers(1, 4 * num_pairs, num_pairs)) % (4 * num_pairs)
  one = lambda i: synthetic.render(seed, int(i), size, options)["image"]
  return SwapPairs(
    structure=np.stack([one(i) for i in a]),
    texture=np.stack([one(j) for j in b]),
    truth=np.stack([hybrid(seed, int(i), int(j), size, options) for i, j in zip(a, b)]),
    pairs=np.stack([a, b], 1),
  )


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


def _summary(values: dict[str, np.ndarray]) -> dict:
  return {k: {"mean": float(np.mean(v)), "sem": float(np.std(v) / np.sqrt(len(v)))} for k, v in values.items()}


def evaluate(autoencoder, data: SwapPairs, batch_size: int = 32) -> dict:
  """Scores of swap(A, B) and the baselines against the truth, and of reconstruction; `autoencoder` has
  `encode(images) -> (structure, texture)` and `decode(structure, texture) -> images` (jaxgeal.swap's
  SwappingAutoencoder). Returns {"vs_truth": {candidate: {metric: {mean, sem}}}, "reconstruction": ...,
  "wins": {baseline: fraction of pairs where the swap is nearer the truth by l1}, "num_pairs"}."""
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
  return {
    "num_pairs": len(data.truth),
    "vs_truth": {name: _summary(per[name]) for name in CANDIDATES},
    "reconstruction": _summary(distances(images["rec_structure"], data.structure)),
    "wins": wins,
  }


def markdown(result: dict, title: str = "Swapping on held-out synthetic pairs") -> str:
  """The result as a markdown table (what benchmarks/swapping.md shows)."""
  lines = [
    f"### {title}",
    "",
    f"{result['num_pairs']} pairs (A, B); truth = A's pose and shape in B's appearance, rendered exactly. "
    "Lower l1 / lcn and higher PSNR are nearer the truth; +- one standard error.",
    "",
    "| candidate | l1 | PSNR (dB) | lcn | swap nearer (l1) |",
    "|---|---|---|---|---|",
  ]
  for name in CANDIDATES:
    m = result["vs_truth"][name]
    win = "" if name == "swap" else f"{100 * result['wins'][name]:.0f} % of pairs"
    lines.append(
      f"| {name} | {m['l1']['mean']:.4f} +- {m['l1']['sem']:.4f} | {m['psnr']['mean']:.2f} +- "
      f"{m['psnr']['sem']:.2f} | {m['lcn']['mean']:.4f} +- {m['lcn']['sem']:.4f} | {win} |"
    )
  r = result["reconstruction"]
  lines += [
    "",
    f"Reconstruction of A: l1 {r['l1']['mean']:.4f}, PSNR {r['psnr']['mean']:.2f} dB, lcn {r['lcn']['mean']:.4f}.",
  ]
  return "\n".join(lines) + "\n"
