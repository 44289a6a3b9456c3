"""Specification of `jaxgeal.datasets.cub` on a tiny tree in the official CUB-200-2011 layout."""

from __future__ import annotations

import numpy as np
import pytest

from jaxgeal.datasets import base, cub, keypoints
from tests.datasets import fakes

UPSTREAM_CUB_PERMUTATION = [0, 1, 2, 3, 4, 5, 10, 11, 12, 9, 6, 7, 8, 13, 14]


@pytest.fixture
def cub_dir(tmp_path):
  # Image 1 (20 x 40) has a 2x2 white block at 0-based x 20..21, y 6..7: its left eye, 1-based (21.5, 7.5).
  return fakes.make_cub(
    tmp_path / "CUB_200_2011",
    {
      1: (
        "001.Albatross/a.jpg",
        fakes.marked(20, 40, 20, 6, 2),
        False,
        [11, 5, 20, 10],
        {7: (21.5, 7.5), 11: (31.0, 11.0)},
      ),
      2: ("001.Albatross/b.jpg", fakes.solid(30, 30, 60), False, [1, 1, 30, 30], {1: (15.0, 15.0)}),
      3: ("002.Gull/c.jpg", fakes.solid(16, 16, 90), True, [2, 2, 10, 10], {2: (5.0, 5.0)}),
    },
  )


def test_test_split_with_border_padding(cub_dir, tmp_path):
  fakes.write_corrupt(cub_dir / "images" / "002.Gull" / "broken.jpg")
  with open(cub_dir / "images.txt", "a") as f:
    f.write("4 002.Gull/broken.jpg\n")
  with open(cub_dir / "train_test_split.txt", "a") as f:
    f.write("4 0\n")
  with open(cub_dir / "bounding_boxes.txt", "a") as f:
    f.write("4 1 1 5 5\n")
  report = cub.build_cub(cub_dir.parent, tmp_path / "out", "test", size=20, pad="border", max_bad_fraction=0.5)
  assert report.num_examples == {"test": 2} and report.bad_images[0][0] == "002.Gull/broken.jpg"
  ds = keypoints.open_keypoint_dataset(report.path)
  assert ds.keypoint_names == fakes.CUB_PARTS and ds.threshold == "image"
  np.testing.assert_array_equal(ds.permutation, UPSTREAM_CUB_PERMUTATION)  # Derived from the part names.
  assert ds.pairs is None  # CUB pairs are drawn at random.
  a = ds[0]
  assert a["name"] == b"001.Albatross/a.jpg" and a["keypoints"].shape == (15, 2)
  np.testing.assert_array_equal(np.flatnonzero(a["visibility"]), [6, 10])
  # 0-based (20.5, 6.5), halved, 5 rows of padding on top: (10, 8), the block's pixel.
  np.testing.assert_allclose(a["keypoints"][6], [10, 8], atol=1e-5)
  assert np.unravel_index(np.argmax(a["image"][..., 0]), (20, 20)) == (8, 10)
  np.testing.assert_allclose(a["keypoints"][10], [(30 + 0.5) / 2 - 0.5, (10 + 0.5) / 2 - 0.5 + 5], atol=1e-5)
  assert (a["keypoints"][~a["visibility"]] == 0).all()
  assert a["pck_threshold"] == 20.0  # max(H, W) of the stored image.
  # Tight box x 10..29, y 4..13 (0-based) moves with the image.
  np.testing.assert_allclose(a["bbox"], [4.75, 6.75, 14.25, 11.25], atol=1e-5)


def _write_acsm_mat(path, entries):
  """ACSM's val_cub_cleaned.mat: struct array `images` with rel_path, id and bbox (x1, y1, x2, y2; 1-based)."""
  from scipy.io import savemat  # pylint: disable=import-outside-toplevel

  box_dtype = [(k, "O") for k in ("x1", "y1", "x2", "y2")]
  images = np.zeros((1, len(entries)), dtype=[("rel_path", "O"), ("id", "O"), ("bbox", "O")])
  for k, (rel, image_id, box) in enumerate(entries):
    b = np.zeros((1, 1), dtype=box_dtype)
    for name, v in zip(("x1", "y1", "x2", "y2"), box):
      b[0, 0][name] = np.array([[float(v)]])
    images[0, k]["rel_path"] = np.array([rel])
    images[0, k]["id"] = np.array([[image_id]])
    images[0, k]["bbox"] = b
  savemat(path, {"images": images})


def test_acsm_split_crops_the_padded_square_box(cub_dir, tmp_path):
  mat = tmp_path / "val_cub_cleaned.mat"
  _write_acsm_mat(mat, [("002.Gull/c.jpg", 3, (3, 3, 10, 10)), ("001.Albatross/a.jpg", 1, (11, 5, 30, 14))])
  report = cub.build_cub(cub_dir, tmp_path / "out", "acsm_val", size=22, acsm_mat=mat)
  assert report.path.endswith("jaxgeal_cub/acsm_val_22_bbox/1.0.0")
  ds = keypoints.open_keypoint_dataset(report.path)
  assert [ds[i]["name"] for i in range(2)] == [b"002.Gull/c.jpg", b"001.Albatross/a.jpg"]  # The .mat's order.
  a = ds[1]
  # Box x 10..29, y 4..13 -> padded 5% and squared: window x 9..30, y -2..19 (22 px, no resize needed).
  np.testing.assert_allclose(a["keypoints"][6], [20.5 - 9, 6.5 + 2], atol=1e-5)
  assert (a["image"][8:10, 11:13] > 200).all() and a["image"].shape == (22, 22, 3)
  np.testing.assert_array_equal(a["image"][0], a["image"][2])  # Rows above the image: edge copies.


def test_seeded_pairs_can_be_stored(cub_dir, tmp_path):
  report = cub.build_cub(cub_dir, tmp_path / "out", "test", size=8, pad="center", num_pairs=50)
  pairs = keypoints.open_keypoint_dataset(report.path).pairs
  assert pairs.shape == (50, 2) and (pairs[:, 0] != pairs[:, 1]).all() and set(pairs.ravel()) == {0, 1}


def test_missing_files_and_options_are_clear_errors(cub_dir, tmp_path):
  with pytest.raises(ValueError, match="acsm_mat"):
    cub.build_cub(cub_dir, tmp_path / "out", "acsm_val")
  with pytest.raises(base.MissingDataError, match="not found"):
    cub.build_cub(cub_dir, tmp_path / "out", "acsm_val", acsm_mat=tmp_path / "missing.mat")
  (cub_dir / "bounding_boxes.txt").unlink()
  with pytest.raises(base.MissingDataError, match="bounding_boxes.txt"):
    cub.build_cub(cub_dir, tmp_path / "out", "test")
