"""Metric writing for trainers: scalars to workdir/metrics.jsonl, images to PNG files under workdir/visuals, and
both to TensorBoard event files under workdir/tensorboard (tensorboardX: no TensorFlow).

The writers follow clu's MetricWriter interface (write_scalars / write_images / flush / close) without deriving
from it: clu 0.0.12's metric_writers package imports TensorFlow when imported.

A resumed run restarts at its checkpoint's step, which may be behind what the killed run had logged: opened with
that `resume_step`, the JSON-lines file drops its lines past it and TensorBoard purges its events past it, so
each step is logged once and in order.

In a multi-process run only process 0 writes: the others' default writer writes nothing.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxgeal import images

METRICS_FILE = "metrics.jsonl"


class BaseWriter:
  """A metric writer that ignores what it does not write."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    pass

  def write_images(self, step: int, grids: Mapping[str, Any]):
    pass

  def write_hparams(self, hparams: Mapping[str, Any]):
    pass

  def flush(self):
    pass

  def close(self):
    pass


class MultiWriter(BaseWriter):
  """Each call goes to every writer."""

  def __init__(self, writers: Sequence[BaseWriter]):
    self.writers = list(writers)

  def write_scalars(self, step, scalars):
    for w in self.writers:
      w.write_scalars(step, scalars)

  def write_images(self, step, grids):
    for w in self.writers:
      w.write_images(step, grids)

  def write_hparams(self, hparams):
    for w in self.writers:
      w.write_hparams(hparams)

  def flush(self):
    for w in self.writers:
      w.flush()

  def close(self):
    for w in self.writers:
      w.close()


def _step_of(line: str) -> int | None:
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return None  # a line cut short by a kill


def truncate_after(path: str | os.PathLike, step: int):
  """Keep the lines of a JSON-lines file whose "step" is <= `step` (and drop unreadable ones); the file is
  replaced atomically, so a kill during the rewrite leaves the old or the new file, never half of one."""
  path = pathlib.Path(path)
  if not path.exists():
    return
  lines = path.read_text().splitlines(keepends=True)
  kept = [l if l.endswith("\n") else l + "\n" for l in lines if (s := _step_of(l)) is not None and s <= step]
  if len(kept) == len(lines) and all(l.endswith("\n") for l in lines):
    return
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "w") as f:
    f.writelines(kept)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


class JsonlWriter(BaseWriter):
  """Scalars -> one JSON line per write: {"step", "time", **scalars}."""

  def __init__(self, path: str | os.PathLike, resume_step: int | None = None):
    self.path = pathlib.Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    if resume_step is not None:
      truncate_after(self.path, resume_step)
    self._file = open(self.path, "a")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    scalars = {k: float(np.asarray(v)) for k, v in scalars.items()}
    self._file.write(json.dumps({"step": int(step), "time": time.time(), **scalars}) + "\n")
    self._file.flush()

  def close(self):
    self._file.close()


class ImageFileWriter(BaseWriter):
  """Images ((H, W, C) uint8 or [-1, 1] floats) -> directory/<name>_<step>.png."""

  def __init__(self, directory: str | os.PathLike):
    self.directory = pathlib.Path(directory)

  def write_images(self, step: int, grids: Mapping[str, Any]):
    for name, grid in grids.items():
      images.save_image(self.directory / f"{name}_{step:07d}.png", grid)


class TensorBoardXWriter(BaseWriter):
  """Scalars and images -> TensorBoard event files through tensorboardX (pure Python, no TensorFlow).
  `purge_step`: events at and after it, left by a killed run, are hidden by TensorBoard."""

  def __init__(self, logdir: str | os.PathLike, purge_step: int | None = None):
    from tensorboardX import SummaryWriter

    self._writer = SummaryWriter(logdir=str(logdir), purge_step=purge_step)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    for key, value in scalars.items():
      self._writer.add_scalar(key, float(np.asarray(value)), global_step=step)

  def write_images(self, step: int, grids: Mapping[str, Any]):
    for key, value in grids.items():
      value = np.asarray(value)
      self._writer.add_image(
        key, value if value.dtype == np.uint8 else images.to_uint8(value), global_step=step, dataformats="HWC"
      )

  def write_hparams(self, hparams: Mapping[str, Any]):
    self._writer.add_hparams(dict(hparams), {})

  def flush(self):
    self._writer.flush()

  def close(self):
    self._writer.close()


def create_default_writer(
  workdir: str | os.PathLike, resume_step: int | None = None, tensorboard: bool = True
) -> MultiWriter:
  """The trainers' writer: metrics.jsonl + visuals/*.png (+ TensorBoard). `resume_step`: the step the run
  starts from (0 for a new run); what a killed run logged after it is dropped. In processes other than 0 of a
  multi-process run: a writer that writes nothing (process 0 has the same scalars and images)."""
  import jax  # pylint: disable=import-outside-toplevel  -- only for the process index

  if jax.process_index() != 0:
    return MultiWriter([])
  workdir = pathlib.Path(workdir)
  writers = [JsonlWriter(workdir / METRICS_FILE, resume_step), ImageFileWriter(workdir / "visuals")]
  if tensorboard:
    writers.append(
      TensorBoardXWriter(workdir / "tensorboard", purge_step=None if resume_step is None else resume_step + 1)
    )
  return MultiWriter(writers)
