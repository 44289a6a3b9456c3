"""SPair-71k (Min et al. 2019) for PCK-Transfer: fixed image pairs of one category, key points, boxes.

Upstream `prepare_data.py --spair_category CAT --spair_split test` (wpeebles/gangealing at ffa6387; paper §4.2):
for every pair file `PairAnnotation/<split>/*:<category>.json` (sorted by name), the source and the target
image each become one record, so pair k is records (2k, 2k + 1) and an image in several pairs is stored
several times; its key points are the pair annotation's (`src_kps` / `trg_kps` at `kps_ids`: the points
visible in *both* images), scattered into the category's key point slots, the others invisible. Slots that
no pair of the split uses are dropped (upstream keeps bicycle 12, cat 15, dog 16, tvmonitor 16 on test).
Images are border padded to a square and resized (upstream forces `--pad border`; zero is the other sensible
choice). The PCK threshold of a record is max(h, w) of its pair-annotation box, i.e. alpha_bbox's radius
(paper §4.2), measured in stored pixels like everything else (upstream stores it in original pixels plus an
inverse map; the ratio distance / threshold is the same).

Expected `manual_dir` (the official SPair-71k archive unpacked; `manual_dir/SPair-71k` works too):
  JPEGImages/<category>/<name>.jpg, ImageAnnotation/<category>/<name>.json ("kps": {id: [x, y] | null}),
  PairAnnotation/{trn,val,test}/<pair>:<category>.json (src_imname, trg_imname, src_kps, trg_kps, kps_ids,
  src_bndbox, trg_bndbox, category, mirror), Layout/ (not needed).
The mirror permutation is upstream's, defined for bicycle, cat, dog and tvmonitor over the slots kept on the
test split; elsewhere (other categories, or a split that keeps other slots) it is stored as None and the
build report says so: an evaluator must not flip-permute such a dataset.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from jaxgeal.datasets import base, keypoints, preprocessing

SPLITS = {"trn": "train", "val": "validation", "test": "test"}  # SPair name -> TFDS split name.

# Upstream's mirror permutations, over the key point slots kept for the test split (see module docstring).
PERMUTATIONS = {
  "bicycle": [0, 1, 3, 2, 4, 5, 7, 6, 8, 10, 9, 11],
  "cat": [1, 0, 3, 2, 5, 4, 7, 6, 8, 10, 9, 12, 11, 13, 14],
  "dog": [1, 0, 3, 2, 5, 4, 6, 7, 8, 10, 9, 12, 11, 13, 14, 15],
  "tvmonitor": [2, 1, 0, 7, 6, 5, 4, 3, 10, 9, 8, 15, 14, 13, 12, 11],
}

INSTRUCTIONS = """\
SPair-71k cannot be downloaded by jaxgeal. Download the SPair-71k archive from its authors' project page,
unpack it and pass the SPair-71k folder (with JPEGImages/, ImageAnnotation/, PairAnnotation/) as manual_dir
/ --path."""


@dataclasses.dataclass(eq=False)
class SpairConfig(base.PreparedConfig):
  category: str = "cat"
  split: str = "test"
  pad: str = "border"

  def __post_init__(self):
    if self.split not in SPLITS:
      raise ValueError(f"SPair split must be one of {list(SPLITS)}, got {self.split!r}")
    super().__post_init__()

  def name_parts(self) -> list[str]:
    return [self.category, self.split] + super().name_parts()


def spair_root(manual_dir: pathlib.Path) -> pathlib.Path:
  for root in (manual_dir, manual_dir / "SPair-71k"):
    if (root / "PairAnnotation").is_dir() and (root / "JPEGImages").is_dir():
      return root
  raise base.MissingDataError(
    f"{manual_dir} is not an SPair-71k folder (no PairAnnotation/ and JPEGImages/).\n" + INSTRUCTIONS
  )


@dataclasses.dataclass
class _Pair:
  name: str
  images: tuple[str, str]  # Image file names (src, trg).
  kps: tuple[np.ndarray, np.ndarray]  # (K, 2) raw pixel points at `ids`.
  boxes: tuple[np.ndarray, np.ndarray]
  ids: np.ndarray  # (K,) key point slots.


def read_pairs(root: pathlib.Path, category: str, split: str) -> tuple[list[_Pair], list[str]]:
  """The split's pairs of `category` in file name order, and the names of mirrored pairs left out."""
  files = sorted((root / "PairAnnotation" / split).glob(f"*:{category}.json"))
  if not files:
    raise base.MissingDataError(f"no pair annotations PairAnnotation/{split}/*:{category}.json under {root}")
  pairs, mirrored = [], []
  for f in files:
    d = json.loads(f.read_text())
    if d.get("category", category) != category:
      raise ValueError(f"{f.name}: category {d.get('category')!r}, expected {category!r}")
    if int(d.get("mirror", 0)):
      mirrored.append(f.stem)  # Upstream asserts there are none; their images would need flipping.
      continue
    pairs.append(
      _Pair(
        name=f.stem,
        images=(d["src_imname"], d["trg_imname"]),
        kps=tuple(np.asarray(d[k], np.float64).reshape(-1, 2) for k in ("src_kps", "trg_kps")),
        boxes=(np.asarray(d["src_bndbox"], np.float64), np.asarray(d["trg_bndbox"], np.float64)),
        ids=np.asarray([int(i) for i in d["kps_ids"]], np.int64),
      )
    )
  return pairs, mirrored


def num_slots(root: pathlib.Path, category: str, pairs: list[_Pair]) -> tuple[int, str | None]:
  """Key point slots of the category: len(kps) of an image annotation, else 1 + the largest id used."""
  annotations = sorted((root / "ImageAnnotation" / category).glob("*.json"))
  used = 1 + max((int(p.ids.max()) for p in pairs if p.ids.size), default=-1)
  if not annotations:
    return used, f"no ImageAnnotation/{category}/*.json: assuming {used} key point slots from the pairs"
  return max(used, len(json.loads(annotations[0].read_text())["kps"])), None


class JaxgealSpair(base.PreparedBuilder, skip_registration=True):
  """SPair-71k pairs of one category and split, as upstream GANgealing prepares them for PCK-Transfer."""

  name = "jaxgeal_spair"
  BUILDER_CONFIG_CLS = SpairConfig
  MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

  def _features(self) -> dict[str, Any]:
    return keypoints.keypoint_features(self._image_feature())

  def _split_sources(self, manual_dir: pathlib.Path) -> dict[str, Any]:
    cfg = self.builder_config
    root = spair_root(manual_dir)
    pairs, mirrored = read_pairs(root, cfg.category, cfg.split)
    if mirrored:
      self.warn(f"{len(mirrored)} mirrored pair(s) left out (upstream supports none), e.g. {mirrored[:5]}")
    if not pairs:
      raise ValueError(f"SPair {cfg.category}/{cfg.split}: every pair is mirrored, nothing to build")
    if cfg.max_images is not None:
      pairs = pairs[: max(1, cfg.max_images // 2)]
    slots, warning = num_slots(root, cfg.category, pairs)
    if warning:
      self.warn(warning)
    visible_any = np.zeros(slots, bool)
    for p in pairs:
      visible_any[p.ids] = True
    self._kept = np.flatnonzero(visible_any)
    return {SPLITS[cfg.split]: (root, pairs)}

  def _num_candidates(self, source) -> int:
    return len({name for p in source[1] for name in p.images})

  def _examples(self, source, tracker: base.BadImageTracker) -> Iterator[dict[str, Any]]:
    root, pairs = source
    cfg = self.builder_config
    names = sorted({name for p in pairs for name in p.images})

    def process(name):
      image = base.read_image(root / "JPEGImages" / cfg.category / name)
      out, affine = preprocessing.preprocess(image, cfg.size, cfg.pad)
      return self.encode(out), affine, image.shape[:2], out.shape[:2]

    # Each distinct image is decoded once, however many pairs it is in.
    done = {}
    for name, result, error in base.ordered_map(process, names, cfg.num_workers):
      if error is not None:
        tracker.add(f"{cfg.category}/{name}", error)
      else:
        done[name] = result
    slot_of = {int(s): i for i, s in enumerate(self._kept)}
    kept_pairs, dropped = [], []
    for p in pairs:
      if not all(n in done for n in p.images):
        dropped.append(p.name)
        continue
      for side in (0, 1):
        encoded, affine, orig_hw, out_hw = done[p.images[side]]
        kps = np.zeros((len(self._kept), 2))
        vis = np.zeros(len(self._kept), bool)
        rows = [slot_of[int(i)] for i in p.ids]
        kps[rows] = p.kps[side]
        vis[rows] = True
        yield keypoints.make_example(
          image=encoded,
          image_hw=out_hw,
          name=f"{cfg.category}/{p.images[side]}",
          keypoints=kps,
          visibility=vis,
          bbox=p.boxes[side],
          affine=affine,
          original_hw=orig_hw,
          threshold="bbox",
        )
      kept_pairs.append([2 * len(kept_pairs), 2 * len(kept_pairs) + 1])
    if dropped:
      self.warn(f"{len(dropped)} pair(s) dropped because an image was unreadable, e.g. {dropped[:5]}")
    self._pairs = kept_pairs

  def _extra_metadata(self) -> dict[str, Any]:
    cfg = self.builder_config
    perm = PERMUTATIONS.get(cfg.category)
    if perm is not None and len(perm) != len(self._kept):
      self.warn(
        f"upstream's {cfg.category} mirror permutation has {len(perm)} slots but split {cfg.split!r} "
        f"keeps {len(self._kept)}; permutation stored as None"
      )
      perm = None
    elif perm is None:
      self.warn(f"no mirror permutation known for SPair category {cfg.category!r}; stored as None")
    return keypoints.dataset_metadata(
      keypoint_names=[str(int(s)) for s in self._kept],
      permutation=perm,
      pairs={SPLITS[cfg.split]: self._pairs},
      threshold="bbox",
      extra={"keypoint_ids": self._kept.tolist()},
    )


def build_spair(
  manual_dir: str | os.PathLike,
  out_dir: str | os.PathLike,
  category: str,
  split: str = "test",
  size: int = 256,
  pad: str = "border",
  *,
  overwrite: bool = False,
  **options,
) -> base.BuildReport:
  """Builds `out_dir/jaxgeal_spair/<category>_<split>_<size>_<pad>/1.0.0` from an SPair-71k folder."""
  config = SpairConfig(category=category, split=split, size=size, pad=pad, **options)
  return base.build(JaxgealSpair, config, manual_dir, out_dir, overwrite=overwrite)
