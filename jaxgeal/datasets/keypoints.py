"""The key point dataset structure shared by SPair-71k, CUB, synthetic data and the PCK-Transfer evaluator.

Replaces upstream's `keypoints.pt` / `pairs.pt` / `permutation.pt` / `pck_thresholds.pt` /
`inverse_coordinates.pt` beside an LMDB (wpeebles/gangealing at ffa6387, `prepare_data.py`) with one record per
image plus dataset-level metadata; the structure itself is documented in docs/datasets.md. Writers call
`keypoint_features` (the TFDS features), `make_example` (moves raw annotations through the same `Affine` as
the pixels) and `dataset_metadata`; readers call `open_keypoint_dataset`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxgeal.datasets import preprocessing, reader

STRUCTURE = "jaxgeal.keypoints/1"
THRESHOLDS = ("bbox", "image")


def keypoint_features(image_feature: tfds.features.Image) -> dict[str, Any]:
  """The per-record TFDS features of a key point dataset (P, the number of key points, is fixed per dataset)."""
  return {
    "image": image_feature,
    "name": tfds.features.Text(),
    "keypoints": tfds.features.Tensor(shape=(None, 2), dtype=np.float32),
    "visibility": tfds.features.Tensor(shape=(None,), dtype=np.bool_),
    "bbox": tfds.features.Tensor(shape=(4,), dtype=np.float32),
    "pck_threshold": tfds.features.Scalar(dtype=np.float32),
    "original_size": tfds.features.Tensor(shape=(2,), dtype=np.int32),
    "transform": tfds.features.Tensor(shape=(4,), dtype=np.float32),
  }


def make_example(
  *,
  image: bytes,
  image_hw: Sequence[int] | None = None,
  name: str,
  keypoints,
  visibility,
  bbox,
  affine: preprocessing.Affine,
  original_hw: Sequence[int],
  threshold: str,
) -> dict[str, Any]:
  """One record from annotations in *source* pixels; `affine` maps source to stored pixels.

  Invisible key points are stored as (0, 0). threshold="bbox": pck_threshold = max(h, w) of the stored box
  (SPair's alpha_bbox); "image": max(H, W) of the stored image (`image_hw`, CUB).
  """
  if threshold not in THRESHOLDS:
    raise ValueError(f"threshold must be one of {THRESHOLDS}, got {threshold!r}")
  vis = np.asarray(visibility, bool)
  kps = np.where(vis[:, None], affine(np.asarray(keypoints, np.float64).reshape(-1, 2)), 0.0).astype(np.float32)
  box = affine.boxes(np.asarray(bbox, np.float64).reshape(4))
  if threshold == "bbox":
    radius = max(box[2] - box[0], box[3] - box[1])
  else:
    if image_hw is None:
      raise ValueError("threshold='image' needs image_hw, the stored image's (H, W)")
    radius = max(image_hw)
  return {
    "image": image,
    "name": name,
    "keypoints": kps,
    "visibility": vis,
    "bbox": box.astype(np.float32),
    "pck_threshold": np.float32(radius),
    "original_size": np.asarray(original_hw, np.int32)[:2],
    "transform": affine.to_array(),
  }


def dataset_metadata(
  *,
  keypoint_names: Sequence[str],
  permutation: Sequence[int] | None,
  pairs: dict[str, Sequence[Sequence[int]] | None],
  threshold: str,
  extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
  """The dataset-level half of the structure, stored in metadata.json."""
  if permutation is not None:
    if sorted(permutation) != list(range(len(keypoint_names))):
      raise ValueError(f"permutation {list(permutation)} is not a permutation of {len(keypoint_names)} key points")
    permutation = [int(i) for i in permutation]
  return {
    "structure": STRUCTURE,
    "keypoint_names": list(keypoint_names),
    "permutation": permutation,
    "pairs": {k: None if v is None else [[int(a), int(b)] for a, b in v] for k, v in pairs.items()},
    "threshold": threshold,
    **(extra or {}),
  }


def flip_keypoints(keypoints, visibility, permutation, width: int):
  """Key points of the horizontally flipped image: x -> width - 1 - x, then left/right slots swapped."""
  kps = np.asarray(keypoints, np.float32).copy()
  vis = np.asarray(visibility, bool)
  kps[..., 0] = np.where(vis, width - 1 - kps[..., 0], 0.0)
  perm = np.asarray(permutation)
  return kps[..., perm, :], vis[..., perm]


@dataclasses.dataclass
class KeypointDataset:
  """One split of a key point dataset: records plus the dataset-level fields."""

  source: reader.PreparedDataSource
  pairs: np.ndarray | None  # (N, 2) int32 record indices (source, target); None: sample pairs yourself.
  permutation: np.ndarray | None  # (P,) int32 mirror permutation; None: unknown, do not flip-permute.
  keypoint_names: list[str]
  threshold: str  # "bbox" (SPair) or "image" (CUB): what pck_threshold measures.
  metadata: dict[str, Any]

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index) -> dict[str, Any]:
    return self.source[index]

  def annotations(self) -> dict[str, np.ndarray]:
    """Every non-image field stacked over the split (keypoints (N, P, 2), visibility (N, P), ...), cheaply:

    images are not decoded.
    """
    raw = self.source._open()  # pylint: disable=protected-access
    records = [raw[i] for i in range(len(raw))]
    keys = [k for k in (records[0] if records else {}) if k not in self.source.image_keys]
    return {k: np.stack([np.asarray(r[k]) for r in records]) for k in keys}


def open_keypoint_dataset(
  name_or_dir: str | os.PathLike, split: str | None = None, data_dir: str | os.PathLike | None = None
) -> KeypointDataset:
  source = reader.open_dataset(name_or_dir, split, data_dir)
  meta = source.metadata
  if meta.get("structure") != STRUCTURE:
    raise ValueError(
      f"{source!r} is not a key point dataset (metadata structure {meta.get('structure')!r}, expected {STRUCTURE!r})"
    )
  pairs = (meta.get("pairs") or {}).get(source.split)
  perm = meta.get("permutation")
  return KeypointDataset(
    source=source,
    pairs=None if pairs is None else np.asarray(pairs, np.int32).reshape(-1, 2),
    permutation=None if perm is None else np.asarray(perm, np.int32),
    keypoint_names=list(meta["keypoint_names"]),
    threshold=meta["threshold"],
    metadata=meta,
  )
