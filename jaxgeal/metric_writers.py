"""Metric writing for trainers: scalars to workdir/metrics.jsonl, images to PNG files under workdir/visuals, and
both to TensorBoard event files under workdir/tensorboard (tensorboardX: no TensorFlow).

The writers follow clu's MetricWriter interface (write_scalars / write_images / flush / close) without deriving
from it: clu 0.0.12's metric_writers package imports TensorFlow when imported.

A resumed run restarts at its checkpoint's step, which may be behind what the killed run had logged: opened with
that `resume_step`, the JSON-lines file drops its lines past it and TensorBoard purges its events past it, so
each step is logged once and in order.

The work directory may be a bucket (gs://...): there metrics.jsonl and the TensorBoard event files are written
to local staging copies and uploaded periodically (`storage.SYNC_SECS`, `TENSORBOARD_SYNC_SECS`) and on close:
a bucket object cannot be appended to, and tensorboardX writes to gs:// only through google-cloud-storage,
re-uploading the whole event file at each flush. Each TensorBoard upload closes the event file and the next
write starts a new one, so each file is uploaded once.

In a multi-process run only process 0 writes: the others' default writer writes nothing.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxgeal import images, storage

METRICS_FILE = "metrics.jsonl"
# How often the event files of a bucket logdir are uploaded: each upload closes one file (fewer, larger files).
TENSORBOARD_SYNC_SECS = 600.0


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
  path = storage.as_path(path)
  if not path.exists():
    return
  lines = path.read_text().splitlines(keepends=True)
  kept = [l if l.endswith("\n") else l + "\n" for l in lines if (s := _step_of(l)) is not None and s <= step]
  if len(kept) == len(lines) and all(l.endswith("\n") for l in lines):
    return
  storage.write_bytes(path, "".join(kept).encode())


class JsonlWriter(BaseWriter):
  """Scalars -> one JSON line per write: {"step", "time", **scalars}. A bucket path is written through a
  storage.StagedFile (uploaded every `sync_secs` and on close)."""

  def __init__(self, path: str | os.PathLike, resume_step: int | None = None, sync_secs: float | None = None):
    self.path = storage.as_path(path)
    self._staged = None
    if storage.is_remote(self.path):
      self._staged = storage.StagedFile(self.path, sync_secs)
      local = self._staged.local
    else:
      local = pathlib.Path(self.path)
      local.parent.mkdir(parents=True, exist_ok=True)
    if resume_step is not None:
      truncate_after(local, resume_step)
    self._file = open(local, "a")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    scalars = {k: float(np.asarray(v)) for k, v in scalars.items()}
    self._file.write(json.dumps({"step": int(step), "time": time.time(), **scalars}) + "\n")
    self._file.flush()
    if self._staged is not None:
      self._staged.sync()

  def flush(self):
    if self._staged is not None:
      self._staged.sync(force=True)

  def close(self):
    self._file.close()
    if self._staged is not None:
      self._staged.close()


class ImageFileWriter(BaseWriter):
  """Images ((H, W, C) uint8 or [-1, 1] floats) -> directory/<name>_<step>.png."""

  def __init__(self, directory: str | os.PathLike):
    self.directory = storage.as_path(directory)

  def write_images(self, step: int, grids: Mapping[str, Any]):
    for name, grid in grids.items():
      images.save_image(self.directory / f"{name}_{step:07d}.png", grid)


class TensorBoardXWriter(BaseWriter):
  """Scalars and images -> TensorBoard event files through tensorboardX (pure Python, no TensorFlow).
  `purge_step`: events at and after it, left by a killed run, are hidden by TensorBoard. A bucket `logdir` is
  written locally and uploaded at most every `sync_secs` and on close, one event file per upload."""

  def __init__(self, logdir: str | os.PathLike, purge_step: int | None = None, sync_secs: float | None = None):
    self.logdir = storage.as_path(logdir)
    self.sync_secs = TENSORBOARD_SYNC_SECS if sync_secs is None else sync_secs
    self._remote = storage.is_remote(self.logdir)
    self._local_dir = tempfile.mkdtemp(prefix="jaxgeal-tensorboard-") if self._remote else os.fspath(self.logdir)
    self._purge_step = purge_step
    self._writer = None
    self._files = 0
    self._synced_at = time.monotonic()

  def _get(self):
    if self._writer is None:
      from tensorboardX import SummaryWriter

      # Event files are named by the second they start in: a numbered suffix keeps two files of one second (an
      # upload and a close) from having one name, the second replacing the first in the bucket.
      self._files += 1
      suffix = f".{os.getpid()}.{self._files:06d}" if self._remote else ""
      self._writer = SummaryWriter(logdir=self._local_dir, purge_step=self._purge_step, filename_suffix=suffix)
      self._purge_step = None  # Only the first event file of this run purges what a killed run left.
    return self._writer

  def _upload(self):
    """Closes the current event file and moves every local event file to the bucket."""
    if self._writer is not None:
      self._writer.close()
      self._writer = None
    local = pathlib.Path(self._local_dir)
    for f in sorted(p for p in local.rglob("*") if p.is_file()):  # add_hparams writes into a sub-folder
      remote = self.logdir / f.relative_to(local).as_posix()
      remote.parent.mkdir(parents=True, exist_ok=True)
      remote.write_bytes(f.read_bytes())
      f.unlink()
    self._synced_at = time.monotonic()

  def _maybe_upload(self):
    if self._remote and time.monotonic() - self._synced_at >= self.sync_secs:
      self._upload()

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    for key, value in scalars.items():
      self._get().add_scalar(key, float(np.asarray(value)), global_step=step)
    self._maybe_upload()

  def write_images(self, step: int, grids: Mapping[str, Any]):
    for key, value in grids.items():
      value = np.asarray(value)
      self._get().add_image(
        key, value if value.dtype == np.uint8 else images.to_uint8(value), global_step=step, dataformats="HWC"
      )
    self._maybe_upload()

  def write_hparams(self, hparams: Mapping[str, Any]):
    self._get().add_hparams(dict(hparams), {})
    self._maybe_upload()

  def flush(self):
    if self._remote:
      self._upload()
    elif self._writer is not None:
      self._writer.flush()

  def close(self):
    if self._remote:
      self._upload()
      shutil.rmtree(self._local_dir, ignore_errors=True)
    elif self._writer is not None:
      self._writer.close()
      self._writer = None


def create_default_writer(
  workdir: str | os.PathLike, resume_step: int | None = None, tensorboard: bool = True
) -> MultiWriter:
  """The trainers' writer: metrics.jsonl + visuals/*.png (+ TensorBoard). `resume_step`: the step the run
  starts from (0 for a new run); what a killed run logged after it is dropped. `workdir` may be a bucket path.
  In processes other than 0 of a multi-process run: a writer that writes nothing (process 0 has the same
  scalars and images)."""
  import jax  # pylint: disable=import-outside-toplevel  -- only for the process index

  if jax.process_index() != 0:
    return MultiWriter([])
  workdir = storage.as_path(workdir)
  writers = [JsonlWriter(workdir / METRICS_FILE, resume_step), ImageFileWriter(workdir / "visuals")]
  if tensorboard:
    writers.append(
      TensorBoardXWriter(workdir / "tensorboard", purge_step=None if resume_step is None else resume_step + 1)
    )
  return MultiWriter(writers)
