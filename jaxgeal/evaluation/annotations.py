"""Key point annotations for PCK-Transfer: the dataset structure, its JSON file and predictions files.

Dataset structure: "jaxgeal.keypoints/1" (docs/datasets.md; SPair, CUB, synthetic), as a mapping of
arrays or a `KeypointDataset`: `keypoints` (N, P, 2) (x, y) pixels, pixel centres at integers (or (N, P, 3)
with visibility last, as upstream's keypoints.pt), `visibility` (N, P) (default: finite coordinates), `images`
(N, H, W, C) in [-1, 1] (only to run a model), `pck_threshold` (N,) the radius at alpha = 1 with `threshold`
('bbox' | 'image') saying what it measures, or `bbox` (N, 4) x0, y0, x1, y1, `image_sizes` (N, 2) (H, W)
without images, `pairs` (M, 2) fixed source/target indices, `permutation` (P,) mirror permutation (flipped =
mirrored[permutation]), `keypoint_names`. Its JSON form (`save_annotations` / `load_annotations`; invisible
key points as null) is what the CLI reads.

"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

FORMAT = "jaxgeal-pck-annotations"


def keypoints_and_visibility(dataset: Mapping[str, Any]):
  """(N, P, 2) float64 key points and (N, P) bool visibility (given and finite) of a dataset."""
  kps = np.asarray(dataset["keypoints"], np.float64)
  if kps.ndim != 3 or kps.shape[-1] not in (2, 3):
    raise ValueError(f"keypoints must be (N, P, 2) or (N, P, 3), got {kps.shape}")
  vis = dataset.get("visibility")
  if kps.shape[-1] == 3:
    vis, kps = (kps[..., 2] > 0 if vis is None else vis), kps[..., :2]
  vis = np.ones(kps.shape[:2], bool) if vis is None else np.asarray(vis).astype(bool)
  if vis.shape != kps.shape[:2]:
    raise ValueError(f"visibility {vis.shape} does not match keypoints {kps.shape}")
  return kps, vis & np.all(np.isfinite(kps), -1)


def image_widths(dataset: Mapping[str, Any]) -> np.ndarray:
  """(N,) image widths in pixels, from `image_sizes` or the images."""
  n = len(dataset["keypoints"])
  if dataset.get("image_sizes") is not None:
    return np.asarray(dataset["image_sizes"], np.float64).reshape(n, 2)[:, 1]
  if dataset.get("images") is not None:
    return np.full(n, float(np.shape(dataset["images"][0])[1]))
  raise ValueError("mirroring annotations needs the image widths: 'images' or 'image_sizes' in the dataset")


class RecordImages:
  """Lazy [-1, 1] float images of a `jaxgeal.datasets.KeypointDataset` (records hold uint8 images)."""

  def __init__(self, records):
    self._records = records

  def __len__(self):
    return len(self._records)

  def __getitem__(self, i):
    image = np.asarray(self._records[int(i)]["image"])
    return image.astype(np.float32) / 127.5 - 1.0 if image.dtype == np.uint8 else image.astype(np.float32)


def as_dataset(dataset) -> Mapping[str, Any]:
  """A mapping in the structure of the module docstring: mappings pass through; a
  `jaxgeal.datasets.KeypointDataset` (anything with `annotations()` and `pairs`) is read into one, its images
  decoded lazily."""
  if isinstance(dataset, Mapping):
    return dataset
  if hasattr(dataset, "annotations") and hasattr(dataset, "pairs"):
    return dict(
      dataset.annotations(),
      images=RecordImages(dataset),
      pairs=dataset.pairs,
      permutation=getattr(dataset, "permutation", None),
      threshold=getattr(dataset, "threshold", None),
      keypoint_names=getattr(dataset, "keypoint_names", None),
    )
  raise TypeError(f"expected a mapping of annotation arrays or a KeypointDataset, got {type(dataset).__name__}")


def annotations_to_json(dataset: Mapping[str, Any], image_files: Sequence[str] | None = None) -> dict:
  """The JSON document of a dataset's annotations (invisible key points are written as null)."""
  kps, vis = keypoints_and_visibility(dataset)
  n = len(kps)
  sizes = dataset.get("image_sizes")
  if sizes is None and dataset.get("images") is not None:
    sizes = [np.shape(im)[:2] for im in dataset["images"]]
  entries = []
  for i in range(n):
    e = {
      "keypoints": [[float(x), float(y)] if v else None for (x, y), v in zip(kps[i], vis[i])],
      "visibility": [bool(v) for v in vis[i]],
    }
    if image_files is not None:
      e["file"] = str(image_files[i])
    if sizes is not None:
      e["height"], e["width"] = int(sizes[i][0]), int(sizes[i][1])
    for key in ("bbox", "pck_threshold", "mirrored"):
      if dataset.get(key) is not None:
        e[key] = np.asarray(dataset[key][i]).tolist()
    entries.append(e)
  doc = {"format": FORMAT, "version": 1, "num_keypoints": int(kps.shape[1]), "threshold": dataset.get("threshold")}
  for key in ("keypoint_names", "permutation", "pairs"):
    value = dataset.get(key)
    doc[key] = None if value is None else np.asarray(value).tolist()
  doc["images"] = entries
  return doc


def save_annotations(path, dataset: Mapping[str, Any], image_files: Sequence[str] | None = None):
  path = pathlib.Path(path)
  path.write_text(json.dumps(annotations_to_json(dataset, image_files), indent=1))
  return path


def load_annotations(path, load_images: bool = False) -> dict:
  """Read an annotations JSON (or a folder holding `annotations.json`) into the dataset structure.

  Image files are resolved relative to the JSON's folder; `load_images` reads them ([-1, 1] floats).
  """
  path = pathlib.Path(path)
  if path.is_dir():
    path = path / "annotations.json"
  if not path.is_file():
    raise FileNotFoundError(f"no annotations file at {path}")
  doc = json.loads(path.read_text())
  if doc.get("format") != FORMAT:
    raise ValueError(f"{path} is not a {FORMAT} file (format={doc.get('format')!r})")
  entries = doc["images"]
  kps = np.asarray([[(np.nan, np.nan) if k is None else k for k in e["keypoints"]] for e in entries], np.float32)
  vis = np.asarray([e.get("visibility", [k is not None for k in e["keypoints"]]) for e in entries], bool)
  ds = {"keypoints": kps.reshape(len(entries), -1, 2), "visibility": vis.reshape(len(entries), -1)}
  for key in ("bbox", "pck_threshold"):
    if all(key in e for e in entries):
      ds[key] = np.asarray([e[key] for e in entries], np.float32)
  if all("height" in e and "width" in e for e in entries):
    ds["image_sizes"] = np.asarray([[e["height"], e["width"]] for e in entries], np.int32)
  if all("mirrored" in e for e in entries):
    ds["mirrored"] = np.asarray([e["mirrored"] for e in entries], bool)
  for key in ("pairs", "permutation"):
    ds[key] = None if doc.get(key) is None else np.asarray(doc[key], np.int32)
  ds["keypoint_names"], ds["threshold"] = doc.get("keypoint_names"), doc.get("threshold")
  if all("file" in e for e in entries):
    ds["files"] = [str(path.parent / e["file"]) for e in entries]
    if load_images:
      from jaxgeal import images as image_io  # pylint: disable=g-import-not-at-top

      images = [image_io.load_image(f) for f in ds["files"]]
      same = len({im.shape for im in images}) == 1
      ds["images"] = np.stack(images) if same else images  # A list when the sizes differ (SPair originals).
  elif load_images:
    raise ValueError(f"{path} names no image files")
  return ds


def save_predictions(path, rows, predicted, flips=None):
  """Predictions file: `rows` (R, 2) source/target indices, `predicted` (R, P, 2) key points in the targets,
  optionally `flips` (R, 2) bool (see `evaluate_predictions`). `.npz`, else JSON."""
  path = pathlib.Path(path)
  data = {"pairs": np.asarray(rows, np.int64), "keypoints": np.asarray(predicted, np.float64)}
  if flips is not None:
    data["flips"] = np.asarray(flips, bool)
  if path.suffix == ".npz":
    np.savez(path, **data)
  else:
    path.write_text(json.dumps({k: v.tolist() for k, v in data.items()}))
  return path


def load_predictions(path):
  """(rows (R, 2), predicted (R, P, 2), flips (R, 2) or None) from a `.npz` or `.json` predictions file."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"no predictions file at {path}")
  if path.suffix == ".npz":
    with np.load(path) as f:
      data = {k: f[k] for k in f.files}
  else:
    data = json.loads(path.read_text())
  missing = {"pairs", "keypoints"} - set(data)
  if missing:
    raise ValueError(
      f"{path} lacks {sorted(missing)}: a predictions file holds 'pairs' (R, 2) source/target "
      "image indices and 'keypoints' (R, P, 2), each source's key points predicted in its target"
    )
  rows, kps = np.asarray(data["pairs"], np.int64).reshape(-1, 2), data["keypoints"]
  if not isinstance(kps, np.ndarray):  # JSON: null marks a key point the method could not transfer.
    kps = [[[np.nan, np.nan] if k is None else k for k in r] for r in kps]
  predicted = np.asarray(kps, np.float64)
  if predicted.ndim != 3 or predicted.shape[-1] != 2 or len(predicted) != len(rows):
    raise ValueError(f"{path}: 'keypoints' must be (R={len(rows)}, P, 2), got shape {predicted.shape}")
  flips = None if data.get("flips") is None else np.asarray(data["flips"], bool)
  return rows, predicted, flips
