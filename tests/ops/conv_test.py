"""ops.conv: values and derivatives of first, second and third order equal XLA's own convolution's, for
padding, stride 2, odd and even sizes, and under vmap; float64 so that only the formulation can differ."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgeal.ops import conv as conv_ops


def _native(x, w, stride, padding):
  return jax.lax.conv_general_dilated(
    x, w, (stride, stride), [(padding, padding)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


def _inputs(h, w_, k, seed=0, b=2, cin=3, cout=4):
  r = np.random.default_rng(seed)
  x = jnp.asarray(r.standard_normal((b, h, w_, cin)))
  w = jnp.asarray(r.standard_normal((k, k, cin, cout)))
  return x, w


CASES = [  # (height, width, kernel, stride, padding)
  (7, 6, 3, 1, 1),
  (6, 6, 3, 1, 0),
  (5, 8, 1, 1, 0),
  (9, 9, 3, 2, 0),
  (8, 7, 3, 2, 1),
  (8, 8, 1, 2, 0),
  (10, 10, 4, 2, 1),
]


@pytest.fixture(autouse=True)
def _float64():
  with jax.enable_x64(True):
    yield


@pytest.mark.parametrize("h,w_,k,stride,padding", CASES)
def test_values_and_gradients_of_every_order_equal_xla(h, w_, k, stride, padding):
  x, w = _inputs(h, w_, k)
  ours = lambda x, w: conv_ops.conv2d(x, w, stride, padding)  # noqa: E731
  theirs = lambda x, w: _native(x, w, stride, padding)  # noqa: E731
  np.testing.assert_allclose(ours(x, w), theirs(x, w), rtol=1e-12, atol=1e-12)

  r = jnp.asarray(np.random.default_rng(1).standard_normal(theirs(x, w).shape))

  def first(f):  # loss and its gradients in both arguments
    return jax.grad(lambda x, w: jnp.sum(f(x, w) * r) + 0.1 * jnp.sum(f(x, w) ** 2), argnums=(0, 1))

  def second(f):  # R1-like: the weights' gradient of the squared input gradient, and the reverse
    gx = lambda x, w: first(f)(x, w)[0]  # noqa: E731
    gw = lambda x, w: first(f)(x, w)[1]  # noqa: E731
    return lambda x, w: (
      jax.grad(lambda w: jnp.sum(gx(x, w) ** 2))(w),
      jax.grad(lambda x: jnp.sum(gw(x, w) ** 2))(x),
    )

  def third(f):
    return jax.grad(lambda x, w: jnp.sum(second(f)(x, w)[0] ** 2))

  for order in (first, second):
    for a, b in zip(order(ours)(x, w), order(theirs)(x, w), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
  np.testing.assert_allclose(third(ours)(x, w), third(theirs)(x, w), rtol=1e-10, atol=1e-8)


def test_vmapped_per_sample_weights_equal_xla():
  x, w = _inputs(6, 6, 3)
  ws = jnp.stack([w, 2 * w])
  ours = jax.vmap(lambda x, w: conv_ops.conv2d(x[None], w, 2, 1)[0])
  theirs = jax.vmap(lambda x, w: _native(x[None], w, 2, 1)[0])
  np.testing.assert_allclose(ours(x, ws), theirs(x, ws), rtol=1e-12, atol=1e-12)
  g = lambda f: jax.grad(lambda ws: jnp.sum(jax.grad(lambda x: jnp.sum(f(x, ws) ** 2))(x) ** 2))(ws)  # noqa: E731
  np.testing.assert_allclose(g(ours), g(theirs), rtol=1e-10, atol=1e-10)


def test_stride_other_than_one_or_two_is_refused():
  x, w = _inputs(9, 9, 3)
  with pytest.raises(ValueError, match="stride 3"):
    conv_ops.conv2d(x, w, 3)
