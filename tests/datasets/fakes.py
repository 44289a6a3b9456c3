"""Tiny fake versions of the on-disk layouts the builders read (image folders, SPair-71k, CUB-200-2011)."""

from __future__ import annotations

import json
import logging
import pathlib

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

tfds.disable_progress_bar()
logging.getLogger("absl").setLevel(logging.ERROR)  # tfds' per-build chatter ("custom data configuration", ...).


def write_image(path: pathlib.Path, image: np.ndarray, **save_kwargs) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.asarray(image, np.uint8)).save(path, **save_kwargs)
  return path


def solid(h: int, w: int, value: int) -> np.ndarray:
  return np.full((h, w, 3), value, np.uint8)


def marked(h: int, w: int, x: int, y: int, block: int = 1) -> np.ndarray:
  """Black image with a white block x..x+block-1, y..y+block-1."""
  image = np.zeros((h, w, 3), np.uint8)
  image[y : y + block, x : x + block] = 255
  return image


def write_corrupt(path: pathlib.Path) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
  return path


def make_spair(
  root: pathlib.Path, category: str, slots: int, images: dict[str, np.ndarray], pairs: list[dict], split: str = "test"
) -> pathlib.Path:
  """Official SPair-71k layout. `pairs`: dicts with src, trg, ids, src_kps, trg_kps, src_box, trg_box[, mirror]."""
  for name, image in images.items():
    write_image(root / "JPEGImages" / category / name, image, quality=100)
    kps = {str(i): None for i in range(slots)}
    (root / "ImageAnnotation" / category).mkdir(parents=True, exist_ok=True)
    (root / "ImageAnnotation" / category / f"{pathlib.Path(name).stem}.json").write_text(
      json.dumps(
        {
          "filename": name,
          "category": category,
          "image_width": image.shape[1],
          "image_height": image.shape[0],
          "kps": kps,
        }
      )
    )
  (root / "PairAnnotation" / split).mkdir(parents=True, exist_ok=True)
  (root / "Layout" / "large").mkdir(parents=True, exist_ok=True)
  names = []
  for k, p in enumerate(pairs):
    stem = f"{k:06d}-{pathlib.Path(p['src']).stem}-{pathlib.Path(p['trg']).stem}:{category}"
    names.append(stem)
    src, trg = images[p["src"]], images[p["trg"]]
    (root / "PairAnnotation" / split / f"{stem}.json").write_text(
      json.dumps(
        {
          "pair_id": k,
          "src_imname": p["src"],
          "trg_imname": p["trg"],
          "category": category,
          "src_imsize": [src.shape[1], src.shape[0], 3],
          "trg_imsize": [trg.shape[1], trg.shape[0], 3],
          "src_bndbox": p["src_box"],
          "trg_bndbox": p["trg_box"],
          "src_kps": p["src_kps"],
          "trg_kps": p["trg_kps"],
          "kps_ids": [str(i) for i in p["ids"]],
          "mirror": p.get("mirror", 0),
        }
      )
    )
  (root / "Layout" / "large" / f"{split}.txt").write_text("\n".join(names) + "\n")
  return root


CUB_PARTS = [
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
]


def make_cub(
  root: pathlib.Path, images: dict[int, tuple[str, np.ndarray, bool, list[float], dict[int, tuple]]]
) -> pathlib.Path:
  """Official CUB_200_2011 layout (1-based coordinates). images: {id: (rel path, image, is_train, box x y w h,
  {part id (1-based): (x, y)} of visible parts)}."""
  lines = {"images.txt": [], "train_test_split.txt": [], "bounding_boxes.txt": [], "parts/part_locs.txt": []}
  for image_id, (rel, image, is_train, box, parts) in sorted(images.items()):
    write_image(root / "images" / rel, image, quality=100)
    lines["images.txt"].append(f"{image_id} {rel}")
    lines["train_test_split.txt"].append(f"{image_id} {int(is_train)}")
    lines["bounding_boxes.txt"].append(f"{image_id} " + " ".join(f"{v:.1f}" for v in box))
    for part in range(1, 16):
      x, y = parts.get(part, (0.0, 0.0))
      lines["parts/part_locs.txt"].append(f"{image_id} {part} {x:.1f} {y:.1f} {int(part in parts)}")
  lines["parts/parts.txt"] = [f"{i} {n}" for i, n in enumerate(CUB_PARTS, 1)]
  for name, rows in lines.items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text("\n".join(rows) + "\n")
  return root
