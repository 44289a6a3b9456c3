"""Specification of `jaxgeal.datasets.image_folder` (+ the shared build/read machinery it exercises)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from jaxgeal.datasets import base, image_folder, reader
from tests.datasets import fakes


@pytest.fixture
def folder(tmp_path):
  src = tmp_path / "images"
  fakes.write_image(src / "b.png", fakes.solid(12, 20, 40))  # Landscape
  fakes.write_image(src / "a" / "x.PNG", fakes.solid(20, 12, 80))  # Portrait, upper-case extension
  fakes.write_image(src / "a" / "deep" / "y.jpg", fakes.solid(9, 9, 120), quality=100)
  fakes.write_image(src / "c.webp", fakes.solid(16, 16, 160), lossless=True)
  fakes.write_image(src / ".hidden" / "z.png", fakes.solid(8, 8, 1))  # Skipped: hidden folder
  fakes.write_image(src / "._w.png", fakes.solid(8, 8, 1))  # Skipped: hidden file
  (src / "notes.txt").write_text("not an image")  # Skipped: extension
  return src


def test_build_and_read_back_gives_every_image_preprocessed(folder, tmp_path):
  report = image_folder.build_image_folder(folder, tmp_path / "out", size=8, pad="border")
  assert report.num_examples == {"train": 4} and report.num_candidates == 4 and not report.bad_images
  assert report.path.endswith("jaxgeal_image_folder/8_border/1.0.0")
  source = reader.open_dataset(tmp_path / "out")  # The output directory is enough.
  assert len(source) == 4
  records = [source[i] for i in range(4)]
  assert [r["name"] for r in records] == [b"a/deep/y.jpg", b"a/x.PNG", b"b.png", b"c.webp"]  # Sorted paths.
  for record, value in zip(records, (120, 80, 40, 160)):
    assert record["image"].shape == (8, 8, 3) and record["image"].dtype == np.uint8
    np.testing.assert_allclose(record["image"], value, atol=1)  # Solid colours survive (border padding).
  assert "tensorflow" not in sys.modules


def test_a_corrupt_image_is_reported_by_name_and_skipped(folder, tmp_path):
  fakes.write_corrupt(folder / "a" / "broken.png")
  report = image_folder.build_image_folder(folder, tmp_path / "out", size=8, max_bad_fraction=0.25)
  assert report.num_examples == {"train": 4} and report.num_candidates == 5
  assert [name for name, _ in report.bad_images] == ["a/broken.png"]
  assert "a/broken.png" in report.summary()
  meta = json.loads((tmp_path / "out" / "jaxgeal_image_folder/8_center/1.0.0/metadata.json").read_text())
  assert meta["build_report"]["bad_images"][0][0] == "a/broken.png"


def test_too_many_corrupt_images_fail_the_build_listing_them_and_leave_no_dataset(folder, tmp_path):
  fakes.write_corrupt(folder / "broken1.png")
  fakes.write_corrupt(folder / "broken2.jpg")
  with pytest.raises(base.TooManyBadImagesError, match=r"(?s)broken1\.png.*max_bad_fraction"):
    image_folder.build_image_folder(folder, tmp_path / "out", size=8)  # Default limit 1%: 1 of 6 is too many.
  with pytest.raises(base.MissingDataError):
    reader.open_dataset(tmp_path / "out")


def test_a_truncated_image_counts_as_corrupt(folder, tmp_path):
  data = (folder / "b.png").read_bytes()
  (folder / "b.png").write_bytes(data[: len(data) // 2])
  report = image_folder.build_image_folder(folder, tmp_path / "out", size=8, max_bad_fraction=0.5)
  assert [name for name, _ in report.bad_images] == ["b.png"]


def test_an_existing_dataset_is_reused_unless_its_options_differ(folder, tmp_path):
  image_folder.build_image_folder(folder, tmp_path / "out", size=8)
  again = image_folder.build_image_folder(folder, tmp_path / "out", size=8)
  assert again.reused and again.num_examples == {"train": 4}
  with pytest.raises(ValueError, match="overwrite"):
    image_folder.build_image_folder(folder, tmp_path / "out", size=8, pattern="*.png")
  only_png = image_folder.build_image_folder(folder, tmp_path / "out", size=8, pattern="*.png", overwrite=True)
  assert only_png.num_examples == {"train": 1} and not only_png.reused


def test_jpeg_storage_and_non_square_modes(folder, tmp_path):
  report = image_folder.build_image_folder(
    folder, tmp_path / "out", size=6, pad="resize_small_side", image_format="jpeg"
  )
  source = reader.open_dataset(report.path)
  shapes = sorted(source[i]["image"].shape for i in range(len(source)))
  assert shapes == [(6, 6, 3), (6, 6, 3), (6, 10, 3), (10, 6, 3)]


def test_an_empty_or_missing_folder_is_a_clear_error(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(base.MissingDataError, match="no images"):
    image_folder.build_image_folder(tmp_path / "empty", tmp_path / "out", size=8)
  with pytest.raises(base.MissingDataError, match="does not exist"):
    image_folder.build_image_folder(tmp_path / "nowhere", tmp_path / "out", size=8)
