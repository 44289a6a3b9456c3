"""PCK-Transfer, the metric and its protocols (Peebles et al., CVPR 2022, Sec. 4.2, B.7).

A method predicts where source image A's key points lie in target image B; a prediction is correct when within
`alpha * threshold_B` of B's ground truth (inclusive). Only key points visible in both images count, and PCK
pools all of them over all transfers (correct / counted, as upstream `applications/pck.py`), at several alphas
at once. Protocols: SPair-71K - the dataset's fixed `pairs`, one way, alpha_bbox (threshold = max(bbox h, w)
of the target, `pck_threshold`); CUB - random pairs (upstream's scheme: random permutations of the images cut
into pairs; the paper draws 10,000), alpha * max(H, W) of the target, both directions.

Bootstrap standard deviations (`num_bootstrap` > 1) resample the evaluated pairs with replacement (both
directions of a pair together) and recompute the pooled PCK: upstream's scheme for fixed pairs. For random
pairs upstream draws fresh pairings and reruns the model; reusing the transfers estimates the same spread.

Flips (App. B.4 / upstream `match_flows`): GANgealing may mirror an image before aligning it; the mirrored
image is then evaluated with its own annotation, `mirror_keypoints` (x -> W - 1 - x, left/right slots swapped
by the dataset's mirror permutation) and permuted visibility, as upstream compares in the mirrored frame.
With `flip_fn(images) -> (B,) bool` (which images to mirror), `pck_transfer` mirrors A, B and their
annotations, runs the transfer on the mirrored inputs and scores there; a predictions file carries the same
decisions as `flips` (R, 2). Upstream picks, of the 4 flip combinations of a pair, the least
`TV(flow_A) + TV(flow_B)`; the sum separates, so deciding each image alone (mirror iff the mirrored input's
flow has strictly smaller TV) is the same choice: `model_pck.transfer_functions(aligner)` returns that pair
(transfer_fn, flip_fn), and `model_pck.evaluate_model` / the CLI's `--model` run it.
One deliberate difference: upstream masks with the *unflipped* slots' visibilities, `visA[i] * visB[i]`, even
when it mirrored one image only, whose slot i then holds the original's slot `perm[i]`; here the mask is that
of the mirrored annotations (`visA[perm[i]] * visB[i]`), so hidden key points are never scored.

Datasets: the structure of `jaxgeal.evaluation.annotations`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxgeal.evaluation import annotations

TransferFn = Callable[[Any, Any, Any], Any]  # (images_A, images_B, keypoints_A) -> keypoints in B, (B, P, 2).
DEFAULT_ALPHAS = (0.1, 0.05, 0.01)


def alpha_key(alpha: float) -> str:
  """Result key of one threshold: `pck@0.1`."""
  return f"pck@{alpha:g}"


def mirror_keypoints(keypoints, width, permutation=None) -> np.ndarray:
  """Annotation of the horizontally mirrored image: x -> width - 1 - x, then labels permuted (left <-> right).

  `keypoints` (..., P, 2); `width` a number or an array broadcasting against the leading dims. The map is an
  involution when the permutation is (mirror permutations swap pairs).
  """
  k = np.asarray(keypoints)
  w = np.asarray(width, k.dtype if k.dtype.kind == "f" else np.float64)[..., None]
  k = np.stack([w - 1 - k[..., 0], k[..., 1]], -1)
  return k if permutation is None else k[..., np.asarray(permutation), :]


def mirror_visibility(visibility, permutation=None) -> np.ndarray:
  """Visibility (..., P) of the mirrored image: slots permuted like `mirror_keypoints`."""
  v = np.asarray(visibility)
  return v if permutation is None else v[..., np.asarray(permutation)]


def flip_annotations(keypoints, visibility, flips, width, permutation=None):
  """Annotations (B, P, 2) / (B, P) of the images mirrored where `flips` (B,) is true; the others unchanged."""
  flips = np.asarray(flips, bool).reshape(-1)
  keypoints, visibility = np.asarray(keypoints), np.asarray(visibility, bool)
  if flips.shape[0] != keypoints.shape[0]:
    raise ValueError(f"flips must have one entry per image: {flips.shape[0]} vs {keypoints.shape[0]}")
  return (
    np.where(flips[:, None, None], mirror_keypoints(keypoints, width, permutation), keypoints),
    np.where(flips[:, None], mirror_visibility(visibility, permutation), visibility),
  )


def flip_images(images, flips) -> np.ndarray:
  """(B, H, W, C) images mirrored horizontally where `flips` (B,) is true."""
  images = np.asarray(images)
  flips = np.asarray(flips, bool).reshape(-1)
  if flips.shape[0] != images.shape[0]:
    raise ValueError(f"flips must have one entry per image: {flips.shape[0]} vs {images.shape[0]} images")
  return np.where(flips[:, None, None, None], images[:, :, ::-1], images)


def image_thresholds(dataset: Mapping[str, Any], kind: str) -> np.ndarray:
  """Per-image PCK unit in pixels: 'bbox' = max(bbox h, w) (alpha_bbox), 'image' = max(H, W) (alpha_img).

  `pck_threshold` is used as given when it measures `kind` (the dataset's `threshold` says what it measures;
  undeclared means 'bbox', as SPair); otherwise the unit is computed from `bbox` or the image sizes.
  """
  if kind not in ("bbox", "image"):
    raise ValueError(f"threshold must be 'bbox' or 'image', got {kind!r}")
  n = len(dataset["keypoints"])
  if dataset.get("pck_threshold") is not None and (dataset.get("threshold") or "bbox") == kind:
    return np.asarray(dataset["pck_threshold"], np.float64).reshape(n)
  if kind == "bbox":
    if dataset.get("bbox") is None:
      raise ValueError("threshold 'bbox' needs per-image 'pck_threshold' or 'bbox' in the dataset")
    b = np.asarray(dataset["bbox"], np.float64).reshape(n, 4)
    return np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
  if dataset.get("image_sizes") is not None:
    return np.max(np.asarray(dataset["image_sizes"], np.float64).reshape(n, 2), axis=1)
  images = dataset.get("images")
  if isinstance(images, (list, tuple)):  # Possibly of different sizes.
    return np.array([max(np.shape(im)[:2]) for im in images], np.float64)
  if images is not None:
    return np.full(n, float(max(np.shape(images[0])[:2])))
  raise ValueError("threshold 'image' needs 'images' or 'image_sizes' in the dataset")


def sample_pairs(
  num_images: int, mode: str = "random", fixed_pairs=None, num_pairs: int | None = None, seed: int = 0
) -> np.ndarray:
  """(M, 2) source/target image indices.

  'fixed': the given pairs in order (all by default; cycled if more are asked for, like upstream's infinite
  loader). 'random': upstream's scheme - a random permutation of the images cut into consecutive pairs (an
  odd last image dropped), new permutations until `num_pairs` (default one permutation's worth, N // 2).
  """
  if mode == "fixed":
    if fixed_pairs is None or len(fixed_pairs) == 0:
      raise ValueError("pairs='fixed' needs the dataset's 'pairs'; use pairs='random' for datasets without them")
    fixed = np.asarray(fixed_pairs, np.int64).reshape(-1, 2)
    if fixed.min() < 0 or fixed.max() >= num_images:
      raise ValueError(f"fixed pairs index images outside [0, {num_images})")
    return fixed if num_pairs is None else np.resize(fixed, (int(num_pairs), 2))
  if mode != "random":
    raise ValueError(f"pairs must be 'fixed' or 'random', got {mode!r}")
  if num_images < 2:
    raise ValueError("random pairs need at least 2 images")
  total = num_images // 2 if num_pairs is None else int(num_pairs)
  rng, per_perm = np.random.default_rng(seed), num_images // 2
  perms = [rng.permutation(num_images)[: 2 * per_perm].reshape(-1, 2) for _ in range(-(-total // per_perm))]
  return np.concatenate(perms)[:total] if perms else np.zeros((0, 2), np.int64)


def score(
  predicted,
  target,
  visible,
  thresholds,
  alphas: Sequence[float] = DEFAULT_ALPHAS,
  groups=None,
  num_bootstrap: int = 0,
  seed: int = 0,
) -> dict:
  """Pooled PCK of R transfers: predicted / target (R, P, 2), visible (R, P), thresholds (R,) in pixels.

  Non-finite predictions count as wrong. `groups` (R,) assigns transfers to bootstrap units (default: each
  its own); with `num_bootstrap` > 1 the units are resampled with replacement and `pck@a_std` is the sample
  standard deviation (ddof 1, as upstream) of the resampled pooled PCKs.
  """
  predicted, target = np.asarray(predicted, np.float64), np.asarray(target, np.float64)
  visible = np.asarray(visible, bool)
  if predicted.shape != target.shape or predicted.shape[:2] != visible.shape:
    raise ValueError(f"shape mismatch: predicted {predicted.shape}, target {target.shape}, visible {visible.shape}")
  if num_bootstrap == 1 or num_bootstrap < 0:
    raise ValueError(f"num_bootstrap must be 0 (off) or at least 2, got {num_bootstrap}")
  alphas = np.asarray(alphas, np.float64).reshape(-1)
  err = np.linalg.norm(predicted - target, axis=-1)  # (R, P); NaN compares False below.
  radius = alphas[None, None, :] * np.asarray(thresholds, np.float64).reshape(-1, 1, 1)
  correct = ((err[..., None] <= radius) & visible[..., None]).sum(1)  # (R, A)
  counted = visible.sum(1)  # (R,)
  total = counted.sum()
  if total == 0:
    raise ValueError("no key point is visible in both images of any pair: PCK is undefined")
  out = {alpha_key(a): float(c) / float(total) for a, c in zip(alphas, correct.sum(0))}
  out.update(num_keypoints=int(total), num_transfers=int(len(err)))
  if num_bootstrap:
    groups = np.arange(len(err)) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    g = int(groups.max()) + 1
    unit_correct = np.zeros((g, len(alphas)))
    np.add.at(unit_correct, groups, correct)
    unit_counted = np.bincount(groups, counted, minlength=g)
    rng = np.random.default_rng([seed, 0xB007])  # Apart from the pair-sampling stream of the same seed.
    samples = np.empty((num_bootstrap, len(alphas)))
    for b in range(num_bootstrap):
      idx = rng.integers(0, g, g)
      n = unit_counted[idx].sum()
      samples[b] = unit_correct[idx].sum(0) / n if n else np.nan
    std = np.nanstd(samples, axis=0, ddof=1)
    out.update({alpha_key(a) + "_std": float(s) for a, s in zip(alphas, std)})
  return out


def _gather(images, idx):
  return images[idx] if isinstance(images, np.ndarray) else np.stack([np.asarray(images[int(i)]) for i in idx])


def pck_transfer(
  transfer_fn: TransferFn,
  dataset: Mapping[str, Any],
  alphas: Sequence[float] = DEFAULT_ALPHAS,
  pairs: str = "fixed",
  num_pairs: int | None = None,
  both_ways: bool = False,
  num_bootstrap: int = 0,
  seed: int = 0,
  threshold: str | None = None,
  flip_fn: Callable[[Any], Any] | None = None,
  batch_size: int = 50,
) -> dict:
  """PCK-Transfer of `transfer_fn` on `dataset` (structure: `jaxgeal.evaluation.annotations`). JSON-serialisable result.

  Args:
    transfer_fn: (images_A (B, H, W, C), images_B, keypoints_A (B, P, 2)) -> predicted key points in B
      (B, P, 2), numpy or JAX. A's invisible key points are passed as 0 (their predictions are ignored).
    alphas: thresholds, reported as `pck@{alpha:g}`.
    pairs: 'fixed' (the dataset's pairs; SPair) or 'random' (CUB; drawn with `seed`).
    num_pairs: how many pairs (default: all fixed pairs / N // 2 random pairs).
    both_ways: also transfer B -> A (upstream's --transfer_both_ways; CUB protocol).
    num_bootstrap: resamples for `pck@a_std` (0 = off).
    threshold: 'bbox' (alpha_bbox) or 'image' (alpha * max(H, W)); default: what the dataset declares in
      `threshold`, else the paper's protocols, 'bbox' for fixed pairs and 'image' for random pairs.
    flip_fn: images (B, H, W, C) -> (B,) bool, which images to mirror before the transfer (flip inference;
      see the module docstring); annotations are mirrored with the dataset's `permutation`.
    batch_size: pairs per `transfer_fn` call.
  """
  dataset = annotations.as_dataset(dataset)
  if dataset.get("images") is None:
    raise ValueError("running a transfer function needs dataset['images']; see evaluate_predictions otherwise")
  kps, vis = annotations.keypoints_and_visibility(dataset)
  images = dataset["images"]
  if not isinstance(images, (np.ndarray, list, tuple, annotations.RecordImages)):
    images = np.asarray(images)  # E.g. a JAX array: one host copy, not one per batch.
  threshold = threshold or dataset.get("threshold") or ("bbox" if pairs == "fixed" else "image")
  thr = image_thresholds(dataset, threshold)
  pair_list = sample_pairs(len(kps), pairs, dataset.get("pairs"), num_pairs, seed)
  perm = dataset.get("permutation")
  rows, groups = pair_list, np.arange(len(pair_list))
  if both_ways:
    rows, groups = np.concatenate([rows, rows[:, ::-1]]), np.concatenate([groups, groups])
  sources = np.where(vis[..., None], kps, 0.0).astype(np.float32)
  predicted, targets = np.empty((len(rows),) + kps.shape[1:]), np.empty((len(rows),) + kps.shape[1:])
  visible = np.empty((len(rows), kps.shape[1]), bool)
  for start in range(0, len(rows), batch_size):
    a, b = rows[start : start + batch_size, 0], rows[start : start + batch_size, 1]
    images_a, images_b = _gather(images, a), _gather(images, b)
    kps_a, vis_a, kps_b, vis_b = sources[a], vis[a], kps[b], vis[b]
    if flip_fn is not None:  # Evaluate the mirrored images with their own (mirrored) annotations.
      flips_a, flips_b = flip_fn(images_a), flip_fn(images_b)
      images_a, images_b = flip_images(images_a, flips_a), flip_images(images_b, flips_b)
      kps_a, vis_a = flip_annotations(kps_a, vis_a, flips_a, images_a.shape[2], perm)
      kps_b, vis_b = flip_annotations(kps_b, vis_b, flips_b, images_b.shape[2], perm)
    pred = np.asarray(transfer_fn(images_a, images_b, kps_a))
    if pred.shape != (len(a),) + kps.shape[1:]:
      raise ValueError(f"transfer_fn returned {pred.shape}, expected {(len(a),) + kps.shape[1:]}")
    predicted[start : start + len(a)], targets[start : start + len(a)] = pred, kps_b
    visible[start : start + len(a)] = vis_a & vis_b
  out = score(predicted, targets, visible, thr[rows[:, 1]], alphas, groups, num_bootstrap, seed)
  out.update(
    num_pairs=int(len(pair_list)),
    alphas=[float(a) for a in alphas],
    threshold=threshold,
    pairs=pairs,
    both_ways=bool(both_ways),
    flip_inference=flip_fn is not None,
    num_bootstrap=int(num_bootstrap),
    seed=int(seed),
  )
  return out


def evaluate_predictions(
  dataset: Mapping[str, Any],
  rows,
  predicted,
  alphas: Sequence[float] = DEFAULT_ALPHAS,
  threshold: str | None = None,
  num_bootstrap: int = 0,
  seed: int = 0,
  flips=None,
) -> dict:
  """PCK of precomputed transfers: `rows` (R, 2) source/target indices, `predicted` (R, P, 2) in the targets.

  `flips` (R, 2) bool, if given, says which of source / target the method mirrored; the predictions are then
  in the mirrored target's frame and slots, and are scored against the mirrored annotations. All transfers
  of one unordered pair form one bootstrap unit, and `num_pairs` counts distinct unordered pairs.
  `threshold` defaults to the dataset's declared `threshold`, else 'bbox' when it has per-image thresholds
  or boxes, else 'image'.
  """
  dataset = annotations.as_dataset(dataset)
  kps, vis = annotations.keypoints_and_visibility(dataset)
  rows, predicted = np.asarray(rows, np.int64), np.asarray(predicted, np.float64)
  if rows.ndim != 2 or rows.shape[1] != 2 or (rows.size and (rows.min() < 0 or rows.max() >= len(kps))):
    raise ValueError(f"pairs must be (R, 2) source/target indices in [0, {len(kps)}), got {rows.shape} array")
  if predicted.shape != (len(rows),) + kps.shape[1:]:
    raise ValueError(
      f"predicted key points {predicted.shape} do not match {len(rows)} pairs x {kps.shape[1]} key points x 2"
    )
  has_bbox = dataset.get("pck_threshold") is not None or dataset.get("bbox") is not None
  threshold = threshold or dataset.get("threshold") or ("bbox" if has_bbox else "image")
  thr = image_thresholds(dataset, threshold)
  kps_a, vis_a, kps_b, vis_b = kps[rows[:, 0]], vis[rows[:, 0]], kps[rows[:, 1]], vis[rows[:, 1]]
  if flips is not None:
    flips = np.asarray(flips, bool)
    if flips.shape != rows.shape:
      raise ValueError(f"flips must be (R={len(rows)}, 2) booleans for source and target, got {flips.shape}")
    widths = annotations.image_widths(dataset)
    perm = dataset.get("permutation")
    _, vis_a = flip_annotations(kps_a, vis_a, flips[:, 0], widths[rows[:, 0]], perm)
    kps_b, vis_b = flip_annotations(kps_b, vis_b, flips[:, 1], widths[rows[:, 1]], perm)
  groups = np.unique(np.sort(rows, axis=1), axis=0, return_inverse=True)[1].reshape(-1)
  out = score(predicted, kps_b, vis_a & vis_b, thr[rows[:, 1]], alphas, groups, num_bootstrap, seed)
  out.update(
    num_pairs=int(groups.max() + 1) if len(groups) else 0,
    alphas=[float(a) for a in alphas],
    threshold=threshold,
    num_bootstrap=int(num_bootstrap),
    seed=int(seed),
  )
  return out
