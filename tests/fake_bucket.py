"""A fake gs:// file system for tests: `gs://BUCKET/PATH` is the folder ROOT/BUCKET/PATH, for the two ways jaxgeal
reaches a bucket. etils.epath (jaxgeal's own files, Orbax's metadata, tfds) goes through fsspec's "gs" protocol,
replaced here by a DirFileSystem over ROOT; Orbax's arrays go through TensorStore's GCS driver, replaced by its
file driver over the same folder (TensorStore reaches GCS by HTTP, which a test cannot fake cheaply). Orbax's
check for a hierarchical-namespace bucket (a google-cloud-storage call) answers "no".

Everything gs:// then lands in ROOT, so a test can look there, and check that no local folder named "gs:"
appeared (what pathlib makes of "gs://bucket/run").
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pathlib

import fsspec
from etils.epath import backend as epath_backend
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem
from orbax.checkpoint._src.path import gcs_utils


class _FakeGcsFileSystem(DirFileSystem):
  protocol = ("gs", "gcs")
  cachable = False
  root: str = ""

  def __init__(self, *args, **kwargs):  # epath passes gcsfs options (finalize_on_close=True)
    del args, kwargs
    super().__init__(path=self.root, fs=LocalFileSystem())


@contextlib.contextmanager
def fake_gcs(root: pathlib.Path):
  """Within: gs://BUCKET/PATH is ROOT/BUCKET/PATH for epath/fsspec and for Orbax's TensorStore arrays."""
  root.mkdir(parents=True, exist_ok=True)
  _FakeGcsFileSystem.root = str(root)

  def kvstore(path: str) -> dict:
    bucket, key = gcs_utils.parse_gcs_path(path, add_trailing_slash=False)
    return {"driver": "file", "path": os.path.join(root, bucket, key)}

  saved = {p: fsspec.registry.get(p) for p in ("gs", "gcs")}
  saved_orbax = gcs_utils.get_kvstore_for_gcs, gcs_utils.is_hierarchical_namespace_enabled
  for p in saved:
    fsspec.register_implementation(p, _FakeGcsFileSystem, clobber=True)
  gcs_utils.get_kvstore_for_gcs = kvstore
  gcs_utils.is_hierarchical_namespace_enabled = lambda path: False
  epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
  try:
    yield root
  finally:
    for p, cls in saved.items():
      if cls is None:
        importlib.import_module("fsspec.registry")._registry.pop(p, None)  # pylint: disable=protected-access
      else:
        fsspec.register_implementation(p, cls, clobber=True)
    gcs_utils.get_kvstore_for_gcs, gcs_utils.is_hierarchical_namespace_enabled = saved_orbax
    epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access


def local_gs_folders(*roots: pathlib.Path) -> list[pathlib.Path]:
  """Folders named "gs:" under `roots`: where a gs:// path handled as a local path would have gone."""
  return [p for r in roots for p in r.rglob("gs:")]
