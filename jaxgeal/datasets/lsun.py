"""LSUN categories (cat, dog, horse, bicycle, car, tvmonitor, church_outdoor, ...) from the user's download.

Upstream `prepare_data.py --lsun_category CAT` downloads LSUN itself and reads its LMDB (`--input_is_lmdb`,
wpeebles/gangealing at ffa6387); the GANs of the paper are trained on 256x256 center crops (`--pad center`, §4).
Nothing can be downloaded here, so `manual_dir` must hold the data the user fetched from the LSUN website:

  * the LMDB of the category: a directory with `data.mdb` -- `manual_dir` itself, `manual_dir/<category>`
    (object categories unzip to this) or `manual_dir/<category>_train_lmdb` (scene categories); reading it
    needs the optional `lmdb` package (`pip install 'jaxgeal[lsun]'`). Keys are kept in LMDB order, as
    upstream, and name the records; values are the encoded images (WebP for LSUN);
  * or the images exported to files (`manual_dir/<category>/` or `manual_dir` itself), read as an image folder.

The records are `jaxgeal_image_folder`'s: image (pre-processed, default center crop) and name (LMDB key or
relative path). Unreadable images are skipped and reported as everywhere (see `jaxgeal.datasets.base`);
upstream also skips corrupt LSUN images, but silently.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import tensorflow_datasets as tfds

from jaxgeal.datasets import base, image_folder

INSTRUCTIONS = """\
LSUN cannot be downloaded by jaxgeal. Get the category from the LSUN website (object categories such as cat
come as <category>.zip, scene categories as <category>_train_lmdb.zip, e.g. with the download script of the
LSUN repository), unzip it, and pass the folder that holds the unzipped <category>/ or <category>_train_lmdb/
(or the LMDB folder with data.mdb itself, or a folder of exported images) as manual_dir / --path.
Reading the LMDB needs the optional dependency lmdb: pip install 'jaxgeal[lsun]'."""


def import_lmdb():
  try:
    import lmdb  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(
      "reading an LSUN LMDB needs the optional package lmdb: pip install 'jaxgeal[lsun]' "
      "(or pip install lmdb), or export the images to a folder first"
    ) from e
  return lmdb


def find_lmdb(manual_dir: pathlib.Path, category: str) -> pathlib.Path | None:
  for candidate in (
    manual_dir,
    manual_dir / category,
    manual_dir / f"{category}_train_lmdb",
    manual_dir / f"{category}_lmdb",
  ):
    if (candidate / "data.mdb").is_file():
      return candidate
  return None


@dataclasses.dataclass(eq=False)
class LsunConfig(base.PreparedConfig):
  category: str = "cat"

  def name_parts(self) -> list[str]:
    return [self.category] + super().name_parts()


class LmdbSource:
  """(key, value bytes) of an LMDB, keys listed once up front (upstream does the same; ~1.6M for cats)."""

  def __init__(self, path: pathlib.Path, max_images: int | None):
    self.path = path
    lmdb = import_lmdb()
    self._env = lmdb.open(os.fspath(path), readonly=True, lock=False, readahead=False, meminit=False)
    with self._env.begin(write=False) as txn:
      self.keys = list(txn.cursor().iternext(keys=True, values=False))
    if max_images is not None:
      self.keys = self.keys[:max_images]

  def __len__(self) -> int:
    return len(self.keys)

  def __iter__(self) -> Iterator[tuple[str, bytes]]:
    # Values are read on this thread (an LMDB read transaction belongs to one thread); decoding is parallel.
    with self._env.begin(write=False, buffers=False) as txn:
      for key in self.keys:
        value = txn.get(key)
        yield key.decode("utf-8", "backslashreplace"), b"" if value is None else value


class JaxgealLsun(base.PreparedBuilder, skip_registration=True):
  """One LSUN category, pre-processed as upstream GANgealing's prepare_data.py (center crop by default)."""

  name = "jaxgeal_lsun"
  BUILDER_CONFIG_CLS = LsunConfig
  MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

  def _features(self) -> dict[str, Any]:
    return {"image": self._image_feature(), "name": tfds.features.Text()}

  def _split_sources(self, manual_dir: pathlib.Path) -> dict[str, Any]:
    cfg = self.builder_config
    lmdb_dir = find_lmdb(manual_dir, cfg.category)
    if lmdb_dir is not None:
      return {"train": LmdbSource(lmdb_dir, cfg.max_images)}
    folder = manual_dir / cfg.category if (manual_dir / cfg.category).is_dir() else manual_dir
    files = image_folder.find_images(folder)
    if not files:
      raise base.MissingDataError(
        f"no LSUN {cfg.category!r} LMDB (data.mdb) or images found in {manual_dir}.\n" + INSTRUCTIONS
      )
    files = files[: cfg.max_images] if cfg.max_images is not None else files
    return {"train": [(p.relative_to(folder).as_posix(), p) for p in files]}

  def _examples(self, source, tracker: base.BadImageTracker) -> Iterator[dict[str, Any]]:
    load = base.decode_image if isinstance(source, LmdbSource) else base.read_image
    yield from image_folder.image_examples(self, source, load, tracker)


def build_lsun(
  manual_dir: str | os.PathLike,
  out_dir: str | os.PathLike,
  category: str,
  size: int = 256,
  pad: str = "center",
  *,
  overwrite: bool = False,
  **options,
) -> base.BuildReport:
  """Builds `out_dir/jaxgeal_lsun/<category>_<size>_<pad>/1.0.0` from the user's LSUN download."""
  return base.build(
    JaxgealLsun, LsunConfig(category=category, size=size, pad=pad, **options), manual_dir, out_dir, overwrite=overwrite
  )
