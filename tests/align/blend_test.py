"""Compositing: Laplacian-pyramid blending reduces to its ends, is seamless, keeps shapes and ranges."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxgeal.align import blend, splat

SHAPES = [(2, 64, 64), (1, 37, 50), (1, 5, 7)]  # Divisible by 2^(levels-1), not divisible, tiny.


def _random(shape, seed=0):
  rng = np.random.RandomState(seed)
  images = rng.uniform(-1, 1, shape + (3,)).astype(np.float32)
  rgba = np.concatenate([rng.uniform(-1, 1, shape + (3,)), rng.uniform(0, 1, shape + (1,))], -1)
  return images, rgba.astype(np.float32)


@pytest.mark.parametrize("shape", SHAPES)
def test_pyramid_collapses_to_its_input(shape):
  x, _ = _random(shape)
  levels = blend.max_levels(*shape[1:])
  x = blend._pad_to_multiple(jnp.asarray(x), 2 ** (levels - 1))
  np.testing.assert_allclose(blend.collapse(blend.laplacian_pyramid(x, levels)), x, atol=1e-5)


def test_expand_and_reduce_keep_constants():
  np.testing.assert_allclose(blend.expand(jnp.full((1, 3, 5, 2), 0.3)), 0.3, atol=1e-6)
  np.testing.assert_allclose(blend.reduce(jnp.full((1, 8, 6, 2), -0.7)), -0.7, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_alpha_one_gives_the_edit_and_alpha_zero_the_image(shape):
  images, rgba = _random(shape)
  rgba[..., 3] = 1.0
  np.testing.assert_allclose(blend.blend_laplacian(images, rgba, 1.0, levels=5), rgba[..., :3], atol=1e-5)
  rgba[..., 3] = 0.0
  np.testing.assert_allclose(blend.blend_laplacian(images, rgba, 1.0, levels=5), images, atol=1e-5)


def test_zero_opacity_gives_the_image():
  images, rgba = _random((1, 40, 40))
  np.testing.assert_allclose(blend.blend_laplacian(images, rgba, 0.0), images, atol=1e-5)


def test_one_level_is_alpha_blending():
  images, rgba = _random((2, 24, 30))
  np.testing.assert_allclose(
    blend.blend_laplacian(images, rgba, 0.6, levels=1), blend.blend_alpha(images, rgba, 0.6), atol=1e-6
  )


def test_hard_half_mask_gives_a_smoother_seam_than_alpha():
  images = np.full((1, 64, 64, 3), -1.0, np.float32)  # Black image, white edit on the left half.
  rgba = np.zeros((1, 64, 64, 4), np.float32)
  rgba[:, :, :32] = (1.0, 1.0, 1.0, 1.0)
  seam = slice(24, 40)  # Columns around the seam at x = 31.5.
  alpha = np.asarray(blend.blend_alpha(images, rgba, 1.0))
  lap = np.asarray(blend.blend_laplacian(images, rgba, 1.0, levels=5))
  step_alpha = np.abs(np.diff(alpha[:, :, seam], axis=2)).max()
  step_lap = np.abs(np.diff(lap[:, :, seam], axis=2)).max()
  assert step_alpha == pytest.approx(2.0)
  assert step_lap < 0.6 * step_alpha
  assert lap[0, 32, 5].mean() > 0 > lap[0, 32, 58].mean()  # Still the edit on the left, the image on the right.


@pytest.mark.parametrize("shape", SHAPES)
def test_shape_dtype_and_range_preserved(shape):
  images, rgba = _random(shape, seed=1)
  # Mixing bands of two images can overshoot their range; the output is clipped back to [-1, 1].
  out = np.asarray(blend.blend_laplacian(images, rgba, 0.8, levels=4))
  assert out.shape == images.shape and out.dtype == np.float32
  assert out.min() >= -1.0 and out.max() <= 1.0


def test_dispatch_and_old_import_path():
  images, rgba = _random((1, 16, 16))
  np.testing.assert_array_equal(
    blend.blend(images, rgba, 0.5, method="alpha"), splat.blend_alpha(jnp.asarray(images), jnp.asarray(rgba), 0.5)
  )
  assert splat.blend_alpha is blend.blend_alpha
  with pytest.raises(ValueError, match="blend must be one of"):
    blend.blend(images, rgba, method="poisson")
