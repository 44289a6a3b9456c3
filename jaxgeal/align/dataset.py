"""Flow scores and learned dataset filtering (GANgealing appendix E; upstream flow_scores.py, congeal_dataset.py).

The total variation of an image's residual flow measures how hard the STN had to work: images of the learned
mode congeal with smooth flows, outliers (wrong category, heavy occlusion, unusual poses) need jagged ones.
Appendix E ranks a raw dataset by this score and keeps the smoothest fraction; congeal_dataset additionally
drops images whose similarity warp leaves the image (out of bounds) or zooms in so far that the object spans
fewer than `min_effective_resolution` source pixels.
"""

from __future__ import annotations

import csv
import json
import pathlib
from collections.abc import Sequence

import numpy as np

from jaxgeal.losses.gangealing import total_variation_loss


def scores_from_flows(flows) -> np.ndarray:
  """(N,) TV of (N, H, W, 2) residual flows (lower = smoother)."""
  return np.asarray(total_variation_loss(np.asarray(flows, np.float32), reduce_batch=False))


def rank_by_score(scores) -> np.ndarray:
  """Indices from smoothest (lowest score) to least smooth; stable for ties."""
  return np.argsort(np.asarray(scores), kind="stable")


def retained_count(n: int, fraction_retained: float) -> int:
  if not 0.0 < fraction_retained <= 1.0:
    raise ValueError(f"fraction_retained must be in (0, 1], got {fraction_retained}")
  return int(round(n * fraction_retained))


def select(
  scores,
  fraction_retained: float = 1.0,
  oob=None,
  effective_resolution=None,
  min_effective_resolution: float | None = None,
) -> np.ndarray:
  """Indices kept by congeal_dataset, in their original order.

  The smoothest `fraction_retained` of all images is kept first (the fraction refers to the whole dataset, as
  upstream), then out-of-bounds images and those below the minimum effective resolution are dropped.
  """
  scores = np.asarray(scores)
  keep = np.zeros(len(scores), bool)
  keep[rank_by_score(scores)[: retained_count(len(scores), fraction_retained)]] = True
  if oob is not None:
    keep &= ~np.asarray(oob, bool)
  if min_effective_resolution is not None and effective_resolution is not None:
    keep &= np.asarray(effective_resolution) >= min_effective_resolution
  return np.nonzero(keep)[0]


def write_scores(out_dir, names: Sequence[str], scores) -> tuple[pathlib.Path, pathlib.Path]:
  """flow_scores.json and flow_scores.csv, sorted smoothest first (rank, name, score)."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  order = rank_by_score(scores)
  rows = [{"rank": r, "name": str(names[i]), "score": float(scores[i])} for r, i in enumerate(order)]
  (out / "flow_scores.json").write_text(json.dumps(rows, indent=1))
  with open(out / "flow_scores.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=["rank", "name", "score"])
    w.writeheader()
    w.writerows(rows)
  return out / "flow_scores.json", out / "flow_scores.csv"
