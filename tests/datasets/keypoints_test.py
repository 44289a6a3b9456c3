"""Specification of the key point structure helpers (`jaxgeal.datasets.keypoints`, `base.mirror_permutation`)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxgeal.datasets import base, keypoints, preprocessing
from tests.datasets import fakes


def test_mirror_permutation_swaps_left_and_right_by_name():
  assert base.mirror_permutation(fakes.CUB_PARTS) == [0, 1, 2, 3, 4, 5, 10, 11, 12, 9, 6, 7, 8, 13, 14]
  assert base.mirror_permutation(["Left_Ear", "nose", "Right_Ear"]) == [2, 1, 0]


def test_flipping_twice_is_the_identity_and_swaps_sides_once():
  kps = np.asarray([[1.0, 2.0], [5.0, 5.0], [9.0, 3.0]], np.float32)
  vis = np.asarray([True, True, False])
  flipped, fvis = keypoints.flip_keypoints(kps, vis, [2, 1, 0], width=10)
  np.testing.assert_allclose(flipped, [[0.0, 3.0], [4.0, 5.0], [8.0, 2.0]])  # x -> 9 - x; slot 2 invisible.
  np.testing.assert_array_equal(fvis, [False, True, True])
  back, bvis = keypoints.flip_keypoints(flipped, fvis, [2, 1, 0], width=10)
  np.testing.assert_allclose(back[vis], kps[vis])
  np.testing.assert_array_equal(bvis, vis)


def test_make_example_moves_annotations_with_the_image_and_zeroes_invisible_points():
  affine = preprocessing.Affine((0.5, 0.5), (-0.25, 4.75))
  ex = keypoints.make_example(
    image=b"png",
    image_hw=(20, 20),
    name="x",
    keypoints=[[10.5, 6.5], [3, 3]],
    visibility=[True, False],
    bbox=[4, 2, 36, 18],
    affine=affine,
    original_hw=(20, 40),
    threshold="bbox",
  )
  np.testing.assert_allclose(ex["keypoints"], [[5, 8], [0, 0]])
  assert ex["pck_threshold"] == pytest.approx(16.0)
  ex = keypoints.make_example(
    image=b"png",
    image_hw=(20, 24),
    name="x",
    keypoints=[[1, 1]],
    visibility=[True],
    bbox=[0, 0, 1, 1],
    affine=affine,
    original_hw=(1, 1),
    threshold="image",
  )
  assert ex["pck_threshold"] == 24.0  # max(H, W) of the stored image (CUB).


def test_dataset_metadata_rejects_a_permutation_of_the_wrong_size():
  with pytest.raises(ValueError, match="not a permutation"):
    keypoints.dataset_metadata(keypoint_names=["a", "b"], permutation=[0, 0], pairs={"test": None}, threshold="image")
