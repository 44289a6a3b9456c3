"""Reading prepared datasets back without TensorFlow: random-access sources that grain samples from.

`open_dataset` turns a dataset directory (what `build` reports), an output directory holding one dataset, or
"<builder>/<config>[/<version>]" plus `data_dir` into a `PreparedDataSource`: a grain-compatible random-access
source (len, [i], __getitems__) over tfds' `ArrayRecordDataSource`. Images come back as uint8 (H, W, 3)
arrays, decoded here with PIL (tfds is told to skip image decoding); `repr` names the dataset and split but
no absolute path, so a grain iterator state saved on one machine restores on another. A dataset in a bucket
(gs://...) is found there and read from a local copy (storage.cached_copy): ArrayRecord reads local files only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import tensorflow_datasets as tfds
from etils import epath

from jaxgeal import storage
from jaxgeal.datasets import base

_INFO_FILE = "dataset_info.json"


def resolve_dataset_dir(name_or_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> epath.Path:
  """The `<builder>/<config>/<version>` directory meant by a path or a name.

  Accepts the version directory itself, any directory above exactly one prepared dataset (e.g. the `out_dir`
  given to a build), or a name "<builder>/<config>[/<version>]" relative to `data_dir`. The newest version
  wins where several exist. Paths may be in a bucket (gs://...).
  """
  path = epath.Path(name_or_dir).expanduser()
  if data_dir is not None and not path.is_absolute():
    path = epath.Path(data_dir).expanduser() / path
  if (path / _INFO_FILE).is_file():
    return path
  if not path.is_dir():
    raise base.MissingDataError(f"no prepared dataset at {path} (build one: python -m jaxgeal.datasets.prepare)")
  found = sorted({p.parent for p in storage.find_files(path, _INFO_FILE) if "incomplete" not in p.parent.name}, key=str)
  if not found:
    raise base.MissingDataError(f"no prepared dataset (no {_INFO_FILE}) under {path}")
  parents = {p.parent for p in found}
  if len(parents) > 1:
    listed = "\n  ".join(str(p) for p in found)
    raise ValueError(f"{path} holds several datasets; name one of:\n  {listed}")
  return max(found, key=lambda p: tuple(int(v) if v.isdigit() else 0 for v in p.name.split(".")))


class PreparedDataSource:
  """Random access to one split of a prepared dataset; records are dicts of numpy arrays / bytes."""

  def __init__(self, path: str | os.PathLike, split: str | None = None):
    if storage.is_remote(path):  # ArrayRecord reads local files only (google/array_record#120): download it.
      path = storage.cached_copy(epath.Path(path))
    self.path = epath.Path(path)
    builder = tfds.builder_from_directory(os.fspath(self.path))
    self.info = builder.info
    splits = list(builder.info.splits.keys())
    if split is None:
      if len(splits) != 1:
        raise ValueError(f"{self.path} has splits {splits}; choose one with split=...")
      split = splits[0]
    if split not in splits:
      raise ValueError(f"{self.path} has no split {split!r} (it has {splits})")
    self.split = split
    self.metadata: dict[str, Any] = dict(builder.info.metadata or {})
    features = builder.info.features
    self.image_keys = tuple(k for k, f in features.items() if isinstance(f, tfds.features.Image))
    self._source = None
    self._length = builder.info.splits[split].num_examples

  def _open(self):
    if self._source is None:
      builder = tfds.builder_from_directory(os.fspath(self.path))
      decoders = {k: tfds.decode.SkipDecoding() for k in self.image_keys}
      self._source = builder.as_data_source(split=self.split, decoders=decoders)
    return self._source

  def __getstate__(self):
    # grain workers receive a pickled copy; the array_record readers are reopened there.
    state = dict(self.__dict__)
    state["_source"] = None
    return state

  def __len__(self) -> int:
    return self._length

  def _decode(self, record: dict[str, Any]) -> dict[str, Any]:
    out = dict(record)
    for k in self.image_keys:
      if isinstance(out[k], bytes):
        out[k] = base.decode_image(out[k])
    return out

  def __getitem__(self, index) -> dict[str, Any]:
    index = int(index)
    if not -self._length <= index < self._length:
      raise IndexError(f"index {index} out of range for {self!r}")
    return self._decode(self._open()[index % self._length])

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
    return [self._decode(r) for r in self._open().__getitems__([int(i) for i in indices])]

  def __repr__(self) -> str:
    name = "/".join(self.path.parts[-3:])
    return f"PreparedDataSource({name}, split={self.split!r}, num_records={self._length})"


def open_dataset(
  name_or_dir: str | os.PathLike, split: str | None = None, data_dir: str | os.PathLike | None = None
) -> PreparedDataSource:
  return PreparedDataSource(resolve_dataset_dir(name_or_dir, data_dir), split)
