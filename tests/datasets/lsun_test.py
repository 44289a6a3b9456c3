"""Specification of `jaxgeal.datasets.lsun`: the user's LSUN LMDB (optional `lmdb`) or exported images."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from PIL import Image

from jaxgeal.datasets import base, lsun, reader
from tests.datasets import fakes


def _encoded(value: int, h: int = 12, w: int = 16) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(fakes.solid(h, w, value)).save(buf, format="WEBP", lossless=True)  # LSUN stores WebP.
  return buf.getvalue()


def _write_lmdb(path, items):
  lmdb = pytest.importorskip("lmdb")
  env = lmdb.open(str(path), map_size=1 << 24)
  with env.begin(write=True) as txn:
    for key, value in items:
      txn.put(key.encode(), value)
  env.close()


def test_lmdb_images_are_center_cropped_and_named_by_key(tmp_path):
  _write_lmdb(
    tmp_path / "cat", [("k0", _encoded(10)), ("k1", _encoded(50)), ("k2", b"garbage"), ("k3", _encoded(90, 16, 12))]
  )
  report = lsun.build_lsun(tmp_path, tmp_path / "out", "cat", size=8, max_bad_fraction=0.3)
  assert report.path.endswith("jaxgeal_lsun/cat_8_center/1.0.0")
  assert report.num_examples == {"train": 3} and [n for n, _ in report.bad_images] == ["k2"]
  source = reader.open_dataset(report.path)
  assert [source[i]["name"] for i in range(3)] == [b"k0", b"k1", b"k3"]
  for i, value in enumerate((10, 50, 90)):
    assert source[i]["image"].shape == (8, 8, 3)
    np.testing.assert_allclose(source[i]["image"], value, atol=1)


def test_scene_style_lmdb_folder_and_max_images(tmp_path):
  _write_lmdb(tmp_path / "church_outdoor_train_lmdb", [(f"k{i}", _encoded(20 * i)) for i in range(4)])
  report = lsun.build_lsun(tmp_path, tmp_path / "out", "church_outdoor", size=4, max_images=2)
  assert report.num_examples == {"train": 2}


def test_missing_lmdb_package_explains_how_to_install_it(tmp_path, monkeypatch):
  (tmp_path / "cat").mkdir()
  (tmp_path / "cat" / "data.mdb").write_bytes(b"")
  monkeypatch.setitem(sys.modules, "lmdb", None)  # Makes `import lmdb` fail.
  with pytest.raises(ImportError, match=r"jaxgeal\[lsun\]"):
    lsun.build_lsun(tmp_path, tmp_path / "out", "cat", size=8)


def test_exported_images_are_read_as_a_folder(tmp_path):
  for i in range(3):
    fakes.write_image(tmp_path / "dl" / "dog" / f"{i}.png", fakes.solid(10, 14, 30 * i))
  report = lsun.build_lsun(tmp_path / "dl", tmp_path / "out", "dog", size=8)
  assert report.num_examples == {"train": 3}


def test_no_data_explains_where_to_get_it(tmp_path):
  (tmp_path / "dl").mkdir()
  (tmp_path / "dl" / "readme.txt").write_text("x")
  with pytest.raises(base.MissingDataError, match="LSUN website"):
    lsun.build_lsun(tmp_path / "dl", tmp_path / "out", "cat", size=8)
