"""upfirdn2d and its blur / up / down wrappers: agreement with a direct numpy definition, shape arithmetic,
unit DC gain of the StyleGAN2 filters, and gradients against finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgeal.ops import upfirdn2d as fir


def numpy_upfirdn2d(x, k2d, up, down, pad):
  """Definition: zero-insert, pad (negative crops), true 2-D convolution, subsample. NHWC, float64."""
  x = np.asarray(x, np.float64)
  b, h, w, c = x.shape
  u = np.zeros((b, h * up, w * up, c))
  u[:, ::up, ::up] = x
  p0, p1 = pad
  u = np.pad(u, ((0, 0), (max(p0, 0), max(p1, 0)), (max(p0, 0), max(p1, 0)), (0, 0)))
  u = u[:, max(-p0, 0) : u.shape[1] - max(-p1, 0), max(-p0, 0) : u.shape[2] - max(-p1, 0)]
  kf = np.asarray(k2d, np.float64)[::-1, ::-1]
  kh, kw = kf.shape
  oh, ow = u.shape[1] - kh + 1, u.shape[2] - kw + 1
  out = np.zeros((b, oh, ow, c))
  for i in range(kh):
    for j in range(kw):
      out += kf[i, j] * u[:, i : i + oh, j : j + ow]
  return out[:, ::down, ::down]


@pytest.mark.parametrize(
  "up,down,pad", [(1, 1, (1, 2)), (2, 1, (2, 1)), (1, 2, (1, 1)), (2, 2, (0, 0)), (3, 1, (-1, 2)), (1, 1, (-1, -1))]
)
def test_matches_the_definition_for_asymmetric_kernels(up, down, pad):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 7, 9, 3)).astype(np.float32)
  k1 = np.array([1.0, 2.0, 4.0, 3.0], np.float32)  # asymmetric: catches a missing flip
  k2 = rng.standard_normal((3, 4)).astype(np.float32)
  for k, k2d in [(k1, np.outer(k1, k1)), (k2, k2)]:
    got = fir.upfirdn2d(jnp.asarray(x), k, up=up, down=down, pad=pad)
    want = numpy_upfirdn2d(x, k2d, up, down, pad)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-5)


def test_output_shape_arithmetic():
  x = jnp.zeros((1, 16, 16, 2))
  k = fir.make_kernel([1, 3, 3, 1])
  assert fir.upsample2d(x, k).shape == (1, 32, 32, 2)
  assert fir.downsample2d(x, k).shape == (1, 8, 8, 2)
  assert fir.blur(x, k, pad=(2, 1)).shape == (1, 16, 16, 2)
  assert fir.upfirdn2d(x, k, up=2, down=1, pad=(0, 0)).shape == (1, 29, 29, 2)


@pytest.mark.parametrize("taps", [[1, 3, 3, 1], [1, 2, 1], [1, 1]])
def test_stylegan_filters_have_unit_dc_gain(taps):
  x = jnp.ones((1, 16, 16, 1)) * 3.0
  k = fir.make_kernel(taps)
  assert np.isclose(np.sum(np.outer(k, k)), 1.0)
  inner = lambda y, m: np.asarray(y)[0, m:-m, m:-m, 0]
  np.testing.assert_allclose(inner(fir.blur(x, k, pad=(len(taps) // 2, (len(taps) - 1) // 2)), 2), 3.0, rtol=1e-6)
  np.testing.assert_allclose(inner(fir.upsample2d(x, k), 4), 3.0, rtol=1e-6)
  np.testing.assert_allclose(inner(fir.downsample2d(x, k), 2), 3.0, rtol=1e-6)


def test_2d_and_separable_kernels_agree():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
  k = fir.make_kernel([1, 3, 3, 1])
  np.testing.assert_allclose(
    fir.upfirdn2d(x, k, up=2, pad=(2, 1)), fir.upfirdn2d(x, np.outer(k, k), up=2, pad=(2, 1)), atol=1e-6
  )


def test_gradient_matches_finite_differences():
  with jax.enable_x64(True):
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 6, 6, 2), dtype=jnp.float64)
    t = jax.random.normal(jax.random.PRNGKey(2), (1, 12, 12, 2), dtype=jnp.float64)
    f = lambda x: jnp.sum(fir.upsample2d(x, fir.make_kernel([1, 3, 3, 1])) * t)
    g = jax.grad(f)(x)
    eps, idx = 1e-6, (0, 2, 3, 1)
    fd = (f(x.at[idx].add(eps)) - f(x.at[idx].add(-eps))) / (2 * eps)
    np.testing.assert_allclose(g[idx], fd, rtol=1e-6)


def test_jit_compatible():
  f = jax.jit(lambda x: fir.downsample2d(x, fir.make_kernel([1, 3, 3, 1])))
  assert f(jnp.ones((1, 8, 8, 1))).shape == (1, 4, 4, 1)
