"""The swap benchmark's key point detector: it finds the synthetic heads' key points whatever their colours,
and only where the pose puts them."""

import numpy as np
import pytest

from jaxgeal.datasets import synthetic
from jaxgeal.evaluation import keypoint_detector, swapping

OPTIONS = synthetic.RenderOptions(mirror_prob=0.5, deformation=0.2, max_clutter=0, background_noise=False)


def test_soft_argmax_is_the_expected_position_under_each_maps_softmax():
  logits = np.full((1, 8, 8, 2), -1e4, np.float32)
  logits[0, 2, 5, 0] = 0.0  # all mass at x=5, y=2
  logits[0, 3, 1, 1] = logits[0, 3, 3, 1] = 0.0  # half at x=1, half at x=3, both y=3
  np.testing.assert_allclose(keypoint_detector.soft_argmax(logits)[0], [[5, 2], [2, 3]], atol=1e-5)


def test_degrade_blurs_and_noises_within_the_image_range():
  images = np.stack([synthetic.render(1, i, 32, OPTIONS)["image"] for i in range(4)])
  out = keypoint_detector.degrade(images, np.random.default_rng(0))
  assert out.shape == images.shape and out.min() >= -1 and out.max() <= 1 and not np.allclose(out, images)


@pytest.mark.slow
def test_a_trained_detector_finds_a_structure_in_any_appearance_and_not_in_another_pose():
  detector = keypoint_detector.train(32, OPTIONS, seed=5, num_images=1024, steps=300)
  data = swapping.render_pairs(64, 32, 1000, OPTIONS)  # other seed: renders it was not trained on
  pck = lambda images: swapping.structure_pck(images, data, detector.detect, alphas=(0.1,))["0.1"]
  # A's pose in B's colours (the truth) and in A's own: both found; B's own pose is not A's.
  assert pck(data.truth) > 0.9 and pck(data.structure) > 0.9
  assert pck(data.texture) < 0.4


def test_training_is_deterministic_for_given_arguments():
  one, two = (keypoint_detector.train(32, OPTIONS, seed=3, num_images=16, steps=3) for _ in range(2))
  images = np.stack([synthetic.render(4, i, 32, OPTIONS)["image"] for i in range(2)])
  np.testing.assert_array_equal(one.detect(images), two.detect(images))
