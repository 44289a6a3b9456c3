"""CUB-200-2011 (Wah et al. 2011) for PCK-Transfer: birds with 15 part key points, boxes, visibility.

Upstream `prepare_data.py --cub_acsm` (wpeebles/gangealing at ffa6387; paper §4.2, "the same image pre-processing and
dataset splits as ACSM") builds the ACSM validation split: the images, tight boxes and ids listed in ACSM's
`val_cub_cleaned.mat`, each cropped by the ACSM box crop (box padded by 5% per side, made square, edge
padded where it leaves the image; `preprocessing.acsm_box_crop`) and resized to 256. PCK-Transfer on CUB uses
10,000 random pairs of that split (both ways) with threshold alpha * max(H, W) of the image.

Here the split is a config option:
  * "acsm_val": ACSM's list, read from the .mat file the user passes (`acsm_mat`, needs scipy);
  * "train" / "test": CUB's own `train_test_split.txt`, boxes from `bounding_boxes.txt`.
`pad="bbox"` (default) is the ACSM crop; any `--pad` mode of `preprocessing` works on the whole image instead.
CUB pairs are random: none are stored unless `num_pairs > 0` asks for a fixed, seeded list.

Expected `manual_dir` (the CUB_200_2011 archive unpacked; its parent works too): images.txt, images/,
parts/part_locs.txt, parts/parts.txt (optional), bounding_boxes.txt, train_test_split.txt.
Coordinates in these files (and in the .mat) are 1-based, as CMR/ACSM/upstream read them: 1 is subtracted to
get pixel-centre coordinates. The mirror permutation comes from the part names (left <-> right), which gives
upstream's [0, 1, 2, 3, 4, 5, 10, 11, 12, 9, 6, 7, 8, 13, 14].
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from jaxgeal.datasets import base, keypoints, preprocessing

PART_NAMES = (
  "back",
  "beak",
  "belly",
  "breast",
  "crown",
  "forehead",
  "left eye",
  "left leg",
  "left wing",
  "nape",
  "right eye",
  "right leg",
  "right wing",
  "tail",
  "throat",
)
SPLITS = ("train", "test", "acsm_val")
ACSM_PAD_FRACTION = 0.05

INSTRUCTIONS = """\
CUB-200-2011 cannot be downloaded by jaxgeal. Download CUB_200_2011.tgz from the Caltech-UCSD Birds project
page, unpack it and pass the CUB_200_2011 folder (images.txt, images/, parts/, bounding_boxes.txt,
train_test_split.txt) as manual_dir / --path. For the paper's ACSM validation split also pass ACSM's
val_cub_cleaned.mat (from the ACSM / GANgealing project files) as acsm_mat / --acsm_mat."""


@dataclasses.dataclass(eq=False)
class CubConfig(base.PreparedConfig):
  split: str = "acsm_val"
  pad: str = "bbox"
  acsm_mat: str | None = None
  num_pairs: int = 0
  pair_seed: int = 0

  def __post_init__(self):
    if self.split not in SPLITS:
      raise ValueError(f"CUB split must be one of {SPLITS}, got {self.split!r}")
    if self.split == "acsm_val" and not self.acsm_mat:
      raise ValueError("split 'acsm_val' reads ACSM's val_cub_cleaned.mat: pass acsm_mat (--acsm_mat)")
    super().__post_init__()

  def allowed_pads(self) -> tuple[str, ...]:
    return ("bbox",) + preprocessing.PAD_MODES

  def name_parts(self) -> list[str]:
    return [self.split] + super().name_parts()


def cub_root(manual_dir: pathlib.Path) -> pathlib.Path:
  for root in (manual_dir, manual_dir / "CUB_200_2011"):
    if (root / "images.txt").is_file():
      return root
  raise base.MissingDataError(f"{manual_dir} is not a CUB_200_2011 folder (no images.txt).\n" + INSTRUCTIONS)


def _table(path: pathlib.Path) -> list[list[str]]:
  if not path.is_file():
    raise base.MissingDataError(f"missing {path}.\n" + INSTRUCTIONS)
  return [line.split() for line in path.read_text().splitlines() if line.strip()]


def read_cub(root: pathlib.Path) -> dict[str, Any]:
  """{paths: {id: rel path}, boxes: {id: 0-based inclusive x1 y1 x2 y2}, parts: {id: (15, 3) x y vis},
  train: {id: bool}, part_names: [...]} (ids are CUB's 1-based image ids)."""
  paths = {int(r[0]): r[1] for r in _table(root / "images.txt")}
  boxes = {}
  for r in _table(root / "bounding_boxes.txt"):
    x, y, w, h = (float(v) for v in r[1:5])
    boxes[int(r[0])] = np.asarray([x - 1, y - 1, x - 1 + w - 1, y - 1 + h - 1])
  names_file = root / "parts" / "parts.txt"
  part_names = [" ".join(r[1:]) for r in _table(names_file)] if names_file.is_file() else list(PART_NAMES)
  parts = {i: np.zeros((len(part_names), 3)) for i in paths}
  for r in _table(root / "parts" / "part_locs.txt"):
    parts[int(r[0])][int(r[1]) - 1] = [float(r[2]) - 1, float(r[3]) - 1, float(r[4])]
  train = {int(r[0]): r[1] == "1" for r in _table(root / "train_test_split.txt")}
  return {"paths": paths, "boxes": boxes, "parts": parts, "train": train, "part_names": part_names}


def _scalar(x):
  """A MATLAB struct field as loaded by scipy (nested 1x1 object arrays) -> the Python value inside."""
  while isinstance(x, np.ndarray):
    x = x.reshape(-1)[0] if x.dtype == object or x.dtype.names else (x.item() if x.size == 1 else x)
    if isinstance(x, np.ndarray) and x.dtype.kind in "US":
      x = str(x.reshape(-1)[0])
  return x


def read_acsm_split(mat_path: pathlib.Path) -> list[tuple[int, np.ndarray]]:
  """(CUB image id, 0-based x1 y1 x2 y2 box) for every image of ACSM's val_cub_cleaned.mat, in its order."""
  try:
    from scipy.io import loadmat  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError("reading ACSM's .mat split needs scipy (pip install scipy)") from e
  if not mat_path.is_file():
    raise base.MissingDataError(f"ACSM split file {mat_path} not found.\n" + INSTRUCTIONS)
  images = loadmat(os.fspath(mat_path))["images"].reshape(-1)
  out = []
  for rec in images:
    box = rec["bbox"].reshape(-1)[0]
    xyxy = np.asarray([float(_scalar(box[k])) for k in ("x1", "y1", "x2", "y2")]) - 1
    out.append((int(_scalar(rec["id"])), xyxy))
  return out


class JaxgealCub(base.PreparedBuilder, skip_registration=True):
  """CUB-200-2011 key points, pre-processed as upstream GANgealing's prepare_data.py --cub_acsm."""

  name = "jaxgeal_cub"
  BUILDER_CONFIG_CLS = CubConfig
  MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

  def _features(self) -> dict[str, Any]:
    return keypoints.keypoint_features(self._image_feature(square=self.builder_config.pad == "bbox" or None))

  def _split_sources(self, manual_dir: pathlib.Path) -> dict[str, Any]:
    cfg = self.builder_config
    root = cub_root(manual_dir)
    cub = read_cub(root)
    self._part_names = cub["part_names"]
    self._count = 0
    if cfg.split == "acsm_val":
      items = read_acsm_split(pathlib.Path(cfg.acsm_mat).expanduser())
      unknown = [i for i, _ in items if i not in cub["paths"]]
      if unknown:
        raise ValueError(f"{cfg.acsm_mat} lists image ids missing from {root}/images.txt, e.g. {unknown[:5]}")
    else:
      items = [(i, cub["boxes"][i]) for i in sorted(cub["paths"]) if cub["train"][i] == (cfg.split == "train")]
    if cfg.max_images is not None:
      items = items[: cfg.max_images]
    return {cfg.split: (root, cub, items)}

  def _num_candidates(self, source) -> int:
    return len(source[2])

  def _examples(self, source, tracker: base.BadImageTracker) -> Iterator[dict[str, Any]]:
    root, cub, items = source
    cfg = self.builder_config

    def process(item):
      image_id, box = item
      image = base.read_image(root / "images" / cub["paths"][image_id])
      if cfg.pad == "bbox":
        out, affine = preprocessing.acsm_box_crop(image, box, cfg.size, ACSM_PAD_FRACTION)
      else:
        out, affine = preprocessing.preprocess(image, cfg.size, cfg.pad)
      return self.encode(out), affine, image.shape[:2], out.shape[:2]

    for (image_id, box), result, error in base.ordered_map(process, items, cfg.num_workers):
      if error is not None:
        tracker.add(cub["paths"][image_id], error)
        continue
      encoded, affine, orig_hw, out_hw = result
      parts = cub["parts"][image_id]
      yield keypoints.make_example(
        image=encoded,
        image_hw=out_hw,
        name=cub["paths"][image_id],
        keypoints=parts[:, :2],
        visibility=parts[:, 2] > 0,
        bbox=box,
        affine=affine,
        original_hw=orig_hw,
        threshold="image",
      )
      self._count += 1

  def _extra_metadata(self) -> dict[str, Any]:
    cfg = self.builder_config
    pairs = None
    n = self._count
    if cfg.num_pairs > 0 and n >= 2:
      rng = np.random.default_rng(cfg.pair_seed)
      src = rng.integers(0, n, cfg.num_pairs)
      trg = (src + rng.integers(1, n, cfg.num_pairs)) % n  # Uniform over the other images.
      pairs = np.stack([src, trg], 1).tolist()
    return keypoints.dataset_metadata(
      keypoint_names=self._part_names,
      permutation=base.mirror_permutation(self._part_names),
      pairs={cfg.split: pairs},
      threshold="image",
    )


def build_cub(
  manual_dir: str | os.PathLike,
  out_dir: str | os.PathLike,
  split: str = "acsm_val",
  size: int = 256,
  pad: str = "bbox",
  *,
  acsm_mat: str | os.PathLike | None = None,
  overwrite: bool = False,
  **options,
) -> base.BuildReport:
  """Builds `out_dir/jaxgeal_cub/<split>_<size>_<pad>/1.0.0` from a CUB_200_2011 folder."""
  config = CubConfig(
    split=split, size=size, pad=pad, acsm_mat=None if acsm_mat is None else os.fspath(acsm_mat), **options
  )
  return base.build(JaxgealCub, config, manual_dir, out_dir, overwrite=overwrite)
