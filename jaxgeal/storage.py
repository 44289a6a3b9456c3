"""Paths that may be local or in a bucket (gs://, s3://): what training runs and model I/O read and write.

Work directories, model directories and prepared datasets go through `etils.epath` (as Orbax and tfds do), so
`gs://bucket/run` stays a bucket path instead of becoming a local folder named `gs:`. `as_path` makes local paths
absolute (Orbax needs absolute paths) and leaves bucket paths as they are. Buckets need the `gcs` extra
(`pip install 'jaxgeal[gcs]'`: gcsfs for epath, google-cloud-storage for Orbax's bucket checks).

A bucket object cannot be appended to, and some writers (logging's FileHandler, tensorboardX) take only local
files: `StagedFile` keeps a local copy that is appended to and uploaded whole at most every `sync_secs` and on
close. `cached_copy` downloads a bucket folder for readers that take only local files (ArrayRecord).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
import time

from etils import epath

SYNC_SECS = 60.0  # How often staged files (log, metrics, TensorBoard events) are uploaded to a bucket.


def is_remote(path: str | os.PathLike) -> bool:
  """True for a URI (gs://bucket/dir, s3://...), False for a local path."""
  return "://" in os.fspath(path)


def as_path(path: str | os.PathLike) -> epath.Path:
  """An epath.Path: a bucket path unchanged, a local one with ~ expanded and made absolute."""
  if is_remote(path):
    return epath.Path(path)
  return epath.Path(path).expanduser().absolute()


def find_files(root: epath.Path, name: str) -> list[epath.Path]:
  """Every file called `name` under `root` (recursively), sorted. Listed folder by folder: epath refuses
  glob('**/...') on buckets, and its walk() drops the gs:// of the folders it yields."""
  found, folders = [], [root]
  while folders:
    for child in folders.pop().iterdir():
      if child.is_dir():
        folders.append(child)
      elif child.name == name:
        found.append(child)
  return sorted(found, key=str)


def cache_dir() -> pathlib.Path:
  """Where bucket folders are downloaded: $JAXGEAL_CACHE, else ~/.cache/jaxgeal."""
  return pathlib.Path(os.environ.get("JAXGEAL_CACHE") or pathlib.Path.home() / ".cache" / "jaxgeal").expanduser()


def cached_copy(remote: epath.Path) -> pathlib.Path:
  """A local copy of the bucket folder `remote` under cache_dir()/<scheme>/<bucket>/<path>. Files already there
  with the bucket's size are kept, so a rerun (or another process on the host) downloads only what is missing;
  each file lands under its name only when complete."""
  scheme, rest = os.fspath(remote).split("://", 1)
  local = cache_dir() / scheme / rest.strip("/")
  folders = [(epath.Path(remote), local)]
  while folders:
    src, dst = folders.pop()
    dst.mkdir(parents=True, exist_ok=True)
    for child in src.iterdir():
      if child.is_dir():
        folders.append((child, dst / child.name))
        continue
      target = dst / child.name
      if target.exists() and target.stat().st_size == child.stat().length:
        continue
      tmp = dst / f".{child.name}.{os.getpid()}.tmp"
      tmp.write_bytes(child.read_bytes())
      os.replace(tmp, target)
  return local


def write_bytes(path: epath.Path, data: bytes):
  """Write a file: in a bucket one upload (an object is replaced whole), locally through a temporary file and an
  atomic rename, so a kill during the write leaves the old file or the new one, never half of one."""
  if is_remote(path):
    path.write_bytes(data)
    return
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


class StagedFile:
  """A local file standing in for `remote` (a bucket path): starts as a copy of it (if it exists), is written
  locally, and uploaded whole by `sync()` (at most every `sync_secs`, or `force=True`) and `close()`."""

  def __init__(self, remote: str | os.PathLike, sync_secs: float | None = None):
    self.remote = epath.Path(remote)
    self.sync_secs = SYNC_SECS if sync_secs is None else sync_secs
    self._dir = tempfile.mkdtemp(prefix="jaxgeal-staged-")
    self.local = pathlib.Path(self._dir) / self.remote.name
    if self.remote.exists():
      self.local.write_bytes(self.remote.read_bytes())
    self._synced_at = time.monotonic()

  def sync(self, force: bool = False):
    if self._dir is None or not (force or time.monotonic() - self._synced_at >= self.sync_secs):
      return
    if self.local.exists():
      self.remote.parent.mkdir(parents=True, exist_ok=True)
      self.remote.write_bytes(self.local.read_bytes())
    self._synced_at = time.monotonic()

  def close(self):
    """Uploads the file and removes the local copy."""
    if self._dir is None:
      return
    self.sync(force=True)
    shutil.rmtree(self._dir, ignore_errors=True)
    self._dir = None
