"""Input pipelines: prepared datasets -> sharded, shuffled, resumable batches of model-ready numpy arrays.

Replaces upstream GANgealing's `datasets/` loaders (MultiResolutionDataset over an LMDB, DistributedSampler,
infinite iterators; wpeebles/gangealing at ffa6387) with grain's index-based sampling over the array_record datasets
of `jaxgeal.datasets`:

  * `grain.IndexSampler` decides, from (seed, epoch, position) alone, which record comes next: the whole
    iterator state is a few integers, so `it.get_state()` / `it.set_state(state)` (or grain's Orbax
    `PyGrainCheckpointSave/Restore` handlers) resume a run exactly where it stopped;
  * each process reads a disjoint, equally long slice of the records (`shard_index` / `shard_count`, by
    default `jax.process_index()` / `jax.process_count()`; the few records that do not divide evenly are
    dropped so all hosts step in lockstep) and shuffles within it anew every epoch;
  * images leave the pipeline as float32 NHWC in [-1, 1] (stored as uint8 PNG/JPEG); other features
    (names, key points, ...) are batched as they are.

  it = make_image_iterator("data/jaxgeal_lsun/cat_256_center/1.0.0", batch_size=40, seed=0)
  batch = next(it)            # {"image": (40, 256, 256, 3) float32, "name": (40,) bytes}
  state = it.get_state()      # store with the training checkpoint; later: it.set_state(state)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import grain.python as grain
import numpy as np

from jaxgeal.datasets import base, reader
from jaxgeal.datasets.image_folder import build_image_folder  # noqa: F401  (public helper)


def to_model_images(images: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [-1, 1] (x / 127.5 - 1, the inverse of `jaxgeal.images.to_uint8`)."""
  return np.asarray(images, np.float32) / 127.5 - 1.0


class _ToModelFormat(grain.MapTransform):
  """Decodes encoded images if the source did not, scales them to [-1, 1], keeps the requested features."""

  def __init__(self, image_keys: Sequence[str], keys: Sequence[str] | None):
    self.image_keys = tuple(image_keys)
    self.keys = None if keys is None else tuple(keys)

  def map(self, record: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in record.items():
      if self.keys is not None and k not in self.keys:
        continue
      if k in self.image_keys:
        v = to_model_images(base.decode_image(v) if isinstance(v, bytes) else v)
      out[k] = v
    return out


def open_source(source, split: str | None = None, data_dir: str | os.PathLike | None = None):
  """A random-access source from a data source (returned as is), a tfds builder, a directory or a name."""
  if hasattr(source, "__getitem__") and hasattr(source, "__len__") and not isinstance(source, (str, bytes)):
    return source
  if hasattr(source, "data_dir") and hasattr(source, "info"):  # A tfds builder (prepared).
    return reader.open_dataset(source.data_dir, split)
  if isinstance(source, (str, os.PathLike)):
    return reader.open_dataset(source, split, data_dir)
  raise TypeError(f"cannot read from {source!r}: pass a data source, a tfds builder, a directory or a name")


def make_image_iterator(
  source,
  batch_size: int | None,
  *,
  split: str | None = None,
  data_dir: str | os.PathLike | None = None,
  seed: int = 0,
  shard_index: int | None = None,
  shard_count: int | None = None,
  shuffle: bool = True,
  repeat: bool = True,
  num_epochs: int | None = None,
  drop_remainder: bool = True,
  worker_count: int = 0,
  worker_buffer_size: int = 1,
  read_threads: int | None = None,
  image_keys: Sequence[str] | None = None,
  keys: Sequence[str] | None = None,
) -> grain.DataLoaderIterator:
  """A checkpointable iterator of batches (dicts of numpy arrays) over a prepared dataset.

  Args:
    source: a random-access data source (len, [i] -> dict), a prepared tfds builder, a dataset directory
      (or an output directory holding one), or "<builder>/<config>" relative to `data_dir`.
    batch_size: examples per batch on *this* process; None yields single examples.
    split: which split (default: the only one).
    seed: shuffling seed; the same seed, shard and position give the same batches.
    shard_index, shard_count: this process's slice of the records (default: jax.process_index()/count()).
    shuffle: reshuffle the shard every epoch.
    repeat, num_epochs: epochs to run; `num_epochs` wins, else forever if `repeat`, else one.
    drop_remainder: drop an epoch's last, incomplete batch (static shapes for jit).
    worker_count: grain worker processes (0: decode in this process, with `read_threads` threads).
    image_keys: features to scale to [-1, 1] floats (default: the dataset's image features, or "image").
    keys: features to keep (default: all).

  Returns:
    grain's `DataLoaderIterator`: `next(it)`, `it.get_state() -> bytes`, `it.set_state(bytes)`.
  """
  data = open_source(source, split, data_dir)
  if shard_index is None or shard_count is None:
    import jax  # pylint: disable=import-outside-toplevel  -- only needed for the multi-host defaults.

    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index must be in [0, {shard_count}), got {shard_index}")
  if len(data) < shard_count:
    raise ValueError(f"{data!r} has {len(data)} records, fewer than the {shard_count} shards")
  if num_epochs is None:
    num_epochs = None if repeat else 1
  sampler = grain.IndexSampler(
    num_records=len(data),
    shard_options=grain.ShardOptions(shard_index, shard_count, drop_remainder=True),
    shuffle=shuffle,
    num_epochs=num_epochs,
    seed=seed,
  )
  if image_keys is None:
    image_keys = getattr(data, "image_keys", ("image",))
  operations: list[Any] = [_ToModelFormat(image_keys, keys)]
  if batch_size is not None:
    operations.append(grain.Batch(batch_size, drop_remainder=drop_remainder))
  if worker_count > 0:
    from absl import flags  # pylint: disable=import-outside-toplevel

    if not flags.FLAGS.is_parsed():
      # grain's worker processes read absl flags (their defaults are fine); outside absl.app.run nobody parses
      # them and the workers would die with UnparsedFlagAccessError.
      flags.FLAGS.mark_as_parsed()
  read_options = None if read_threads is None else grain.ReadOptions(num_threads=read_threads)
  loader = grain.DataLoader(
    data_source=data,
    sampler=sampler,
    operations=operations,
    worker_count=worker_count,
    worker_buffer_size=worker_buffer_size,
    read_options=read_options,
  )
  return iter(loader)


def training_images(data_config, batch_size: int, *, seed: int, start_step: int = 0):
  """Endless {"image": (B_local, H, W, 3)} batches for a GAN trainer, positioned at `start_step`.

  `data_config.source` is a prepared dataset (see `python -m jaxgeal.datasets.prepare`). The sampler state is
  the last record index served, so the batches after a resume are exactly those an uninterrupted run would
  have seen: step s starts at record s * B_local.
  """
  import json

  import jax

  source = data_config.get("source") if hasattr(data_config, "get") else data_config
  if not source:
    raise ValueError(
      "config.data.source is empty: prepare a dataset first, e.g.\n"
      "  python -m jaxgeal.datasets.prepare folder --path MY_IMAGES --out data --size 256\n"
      "then pass --config.data.source=data/jaxgeal_image_folder/256_center/1.0.0"
    )
  local_batch = batch_size // jax.process_count()
  it = make_image_iterator(source, local_batch, seed=seed, shuffle=True, repeat=True, keys=("image",))
  if start_step:
    state = json.loads(it.get_state())
    state["last_seen_indices"] = {"0": start_step * local_batch - 1}
    it.set_state(json.dumps(state, indent=4).encode())
  return it
