"""Image-folder datasets: any directory tree of images -> square (or aspect-kept) training images.

Upstream `prepare_data.py --path DIR --pattern '*.png' --pad ... --size ...` (wpeebles/gangealing at ffa6387) writes
an LMDB of resized images; this builder writes the same images as a TFDS array_record dataset:

  * files are found recursively, by extension (case-insensitive: png, jpg, jpeg, webp, bmp, gif, tif, tiff,
    ppm), or by a glob `pattern` relative to the folder; hidden files and folders (".*", e.g. macOS "._x.jpg"
    resource forks) are skipped; the order is the sorted relative path, so record i is the i-th file
    (minus skipped ones);
  * each image is converted to RGB and pre-processed with one `--pad` mode at one `size`
    (`jaxgeal.datasets.preprocessing`); upstream's comma list of sizes is one dataset per size here
    (every dataset has one `image` feature, which is what the trainer reads);
  * unreadable files are skipped and reported (see `jaxgeal.datasets.base`).

Features: image (uint8 PNG/JPEG, size x size x 3 for center/zero/border), name (path relative to the folder).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import tensorflow_datasets as tfds

from jaxgeal.datasets import base, preprocessing

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm")


def find_images(root: str | os.PathLike, pattern: str | None = None, extensions=IMAGE_EXTENSIONS) -> list[pathlib.Path]:
  """Image files under `root` (recursive), sorted, hidden files/folders skipped."""
  root = pathlib.Path(root)
  if pattern:
    candidates = root.glob(pattern)
  else:
    candidates = (p for p in root.rglob("*") if p.suffix.lower() in extensions)
  files = [p for p in candidates if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)]
  return sorted(files, key=lambda p: p.relative_to(root).as_posix())


@dataclasses.dataclass(eq=False)
class ImageFolderConfig(base.PreparedConfig):
  """`pattern`: optional glob relative to the folder (e.g. "**/*.png"), replacing the extension search."""

  pattern: str | None = None


class JaxgealImageFolder(base.PreparedBuilder, skip_registration=True):
  """Images of a user's folder, pre-processed as upstream GANgealing's prepare_data.py."""

  name = "jaxgeal_image_folder"
  BUILDER_CONFIG_CLS = ImageFolderConfig
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass the folder holding your images (searched recursively) as manual_dir."

  def _features(self) -> dict[str, Any]:
    return {"image": self._image_feature(), "name": tfds.features.Text()}

  def _split_sources(self, manual_dir: pathlib.Path) -> dict[str, Any]:
    pattern = self.builder_config.pattern
    files = find_images(manual_dir, pattern)
    if not files:
      what = f"matching {pattern!r}" if pattern else f"with extensions {', '.join(IMAGE_EXTENSIONS)}"
      raise base.MissingDataError(f"no images {what} found under {manual_dir}")
    if self.builder_config.max_images is not None:
      files = files[: self.builder_config.max_images]
    return {"train": [(p.relative_to(manual_dir).as_posix(), p) for p in files]}

  def _examples(self, source, tracker: base.BadImageTracker) -> Iterator[dict[str, Any]]:
    yield from image_examples(self, source, base.read_image, tracker)


def image_examples(
  builder: base.PreparedBuilder, items, load, tracker: base.BadImageTracker
) -> Iterator[dict[str, Any]]:
  """(name, payload) items -> {"image", "name"} examples; `load(payload)` gives uint8 RGB (raises if bad).

  Shared by the folder and LSUN builders: decoding, pre-processing and encoding run on worker threads.
  """
  cfg = builder.builder_config

  def process(item):
    image, _ = preprocessing.preprocess(load(item[1]), cfg.size, cfg.pad)
    return builder.encode(image)

  for (name, _), encoded, error in base.ordered_map(process, items, cfg.num_workers):
    if error is not None:
      tracker.add(name, error)
      continue
    yield {"image": encoded, "name": name}


def build_image_folder(
  src_dir: str | os.PathLike,
  out_dir: str | os.PathLike,
  size: int = 256,
  pad: str = "center",
  *,
  overwrite: bool = False,
  **options,
) -> base.BuildReport:
  """Builds `out_dir/jaxgeal_image_folder/<size>_<pad>/1.0.0` from the images under `src_dir`."""
  return base.build(
    JaxgealImageFolder, ImageFolderConfig(size=size, pad=pad, **options), src_dir, out_dir, overwrite=overwrite
  )
