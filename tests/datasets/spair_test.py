"""Specification of `jaxgeal.datasets.spair` on a tiny tree in the official SPair-71k layout."""

from __future__ import annotations

import numpy as np
import pytest

from jaxgeal.datasets import base, keypoints, spair
from tests.datasets import fakes

# Images (H x W): a 20 x 40 with a 2x2 white block at x 10..11, y 6..7; b 40 x 20 with one at x 4..5, y 30..31.
# Stored at 20 x 20 with border padding, both are halved: a gets 5 rows above, b 5 columns left.
IMAGES = {
  "a.jpg": fakes.marked(20, 40, 10, 6, 2),
  "b.jpg": fakes.marked(40, 20, 4, 30, 2),
  "c.jpg": fakes.solid(20, 20, 90),
}
PAIR_AB = {
  "src": "a.jpg",
  "trg": "b.jpg",
  "ids": [0, 3, 7],
  "src_kps": [[10.5, 6.5], [20, 10], [30, 4]],
  "trg_kps": [[4.5, 30.5], [10, 10], [15, 20]],
  "src_box": [4, 2, 36, 18],
  "trg_box": [2, 4, 18, 36],
}
PAIR_BC = {
  "src": "b.jpg",
  "trg": "c.jpg",
  "ids": [1, 2, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14],
  "src_kps": [[5, 5 + i] for i in range(12)],
  "trg_kps": [[3 + i, 7] for i in range(12)],
  "src_box": [0, 0, 19, 39],
  "trg_box": [5, 5, 15, 10],
}
PAIR_CA_MIRRORED = {
  **PAIR_AB,
  "src": "c.jpg",
  "trg": "a.jpg",
  "ids": [16, 17],
  "src_kps": [[1, 1]] * 2,
  "trg_kps": [[2, 2]] * 2,
  "mirror": 1,
}


@pytest.fixture
def spair_dir(tmp_path):
  # 18 slots in the image annotations, 15 used by the (unmirrored) test pairs, like SPair cats.
  return fakes.make_spair(tmp_path / "SPair-71k", "cat", 18, IMAGES, [PAIR_AB, PAIR_BC, PAIR_CA_MIRRORED])


def test_pairs_become_consecutive_records_with_transformed_keypoints(spair_dir, tmp_path):
  report = spair.build_spair(spair_dir.parent, tmp_path / "out", "cat", "test", size=20)  # Parent dir works too.
  assert report.num_examples == {"test": 4} and report.num_candidates == 3
  assert any("mirrored" in w for w in report.warnings)
  ds = keypoints.open_keypoint_dataset(report.path)
  assert [ds[i]["name"] for i in range(4)] == [b"cat/a.jpg", b"cat/b.jpg", b"cat/b.jpg", b"cat/c.jpg"]
  np.testing.assert_array_equal(ds.pairs, [[0, 1], [2, 3]])
  assert ds.threshold == "bbox"
  assert ds.metadata["keypoint_ids"] == list(range(15)) and len(ds.keypoint_names) == 15  # 15, 16, 17 unused.
  np.testing.assert_array_equal(ds.permutation, spair.PERMUTATIONS["cat"])

  a, b = ds[0], ds[1]
  assert a["image"].shape == (20, 20, 3) and a["keypoints"].shape == (15, 2)
  np.testing.assert_array_equal(np.flatnonzero(a["visibility"]), [0, 3, 7])
  np.testing.assert_array_equal(a["visibility"], b["visibility"])
  # Block centre (10.5, 6.5) -> ((10.5 + 0.5) / 2 - 0.5, (6.5 + 0.5) / 2 - 0.5 + 5) = (5, 8): the marked pixel.
  np.testing.assert_allclose(a["keypoints"][0], [5, 8], atol=1e-5)
  assert np.unravel_index(np.argmax(a["image"][..., 0]), (20, 20)) == (8, 5)
  np.testing.assert_allclose(b["keypoints"][0], [7, 15], atol=1e-5)  # (4.5, 30.5), 5 columns of padding.
  assert np.unravel_index(np.argmax(b["image"][..., 0]), (20, 20)) == (15, 7)
  assert (a["keypoints"][~a["visibility"]] == 0).all()
  # Boxes move with the image; the threshold is the larger side of the stored box (alpha_bbox).
  np.testing.assert_allclose(a["bbox"], [1.75, 5.75, 17.75, 13.75], atol=1e-5)
  assert a["pck_threshold"] == pytest.approx(16.0)
  np.testing.assert_array_equal(a["original_size"], [20, 40])
  affine = spair.preprocessing.Affine.from_array(a["transform"])
  np.testing.assert_allclose(affine.inverse()(a["keypoints"][[0]]), [[10.5, 6.5]], atol=1e-4)


def test_annotations_stack_without_decoding_images(spair_dir, tmp_path):
  report = spair.build_spair(spair_dir, tmp_path / "out", "cat", size=20)
  ann = keypoints.open_keypoint_dataset(report.path).annotations()
  assert ann["keypoints"].shape == (4, 15, 2) and ann["visibility"].shape == (4, 15)
  assert ann["pck_threshold"].shape == (4,) and "image" not in ann


def test_an_unreadable_image_drops_its_pairs_and_is_reported(tmp_path):
  root = fakes.make_spair(
    tmp_path / "spair", "cat", 18, IMAGES, [PAIR_AB, PAIR_BC, {**PAIR_AB, "src": "c.jpg", "trg": "a.jpg"}]
  )
  fakes.write_corrupt(root / "JPEGImages" / "cat" / "c.jpg")
  report = spair.build_spair(root, tmp_path / "out", "cat", size=20, max_bad_fraction=0.5)
  assert [name for name, _ in report.bad_images] == ["cat/c.jpg"]
  assert any("2 pair(s) dropped" in w for w in report.warnings)
  ds = keypoints.open_keypoint_dataset(report.path)
  np.testing.assert_array_equal(ds.pairs, [[0, 1]])
  assert len(ds) == 2 and ds.keypoint_names == [str(i) for i in range(15)]  # Slots from the annotations.


def test_an_unknown_permutation_is_stored_as_none_with_a_warning(tmp_path):
  root = fakes.make_spair(tmp_path / "spair", "dog", 20, IMAGES, [PAIR_AB])  # Upstream's dog has 16 slots.
  report = spair.build_spair(root, tmp_path / "out", "dog", size=20)
  assert any("permutation stored as None" in w for w in report.warnings)
  ds = keypoints.open_keypoint_dataset(report.path)
  assert ds.permutation is None and len(ds.keypoint_names) == 3


def test_missing_layout_and_bad_options_are_clear_errors(tmp_path):
  (tmp_path / "junk").mkdir()
  (tmp_path / "junk" / "readme.txt").write_text("x")
  with pytest.raises(base.MissingDataError, match="not an SPair-71k folder"):
    spair.build_spair(tmp_path / "junk", tmp_path / "out", "cat")
  root = fakes.make_spair(tmp_path / "spair", "cat", 18, IMAGES, [PAIR_AB])
  with pytest.raises(base.MissingDataError, match="PairAnnotation/val"):
    spair.build_spair(root, tmp_path / "out", "cat", split="val")
  with pytest.raises(ValueError, match="split"):
    spair.build_spair(root, tmp_path / "out", "cat", split="training")
