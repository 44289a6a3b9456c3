"""Modulated convolution (StyleGAN2 eqs. 1-3): every implementation against an explicit per-sample conv,
implementations against each other with resampling, and gradients against finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgeal.ops import modulated_conv as mc


def _inputs(seed=0, b=3, h=6, cin=4, cout=5, k=3):
  r = np.random.default_rng(seed)
  x = r.standard_normal((b, h, h, cin)).astype(np.float32)
  w = (r.standard_normal((k, k, cin, cout)) / np.sqrt(cin * k * k)).astype(np.float32)
  s = (1 + 0.5 * r.standard_normal((b, cin))).astype(np.float32)
  return x, w, s


@pytest.mark.parametrize("impl", mc.IMPLS)
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("k", [1, 3])
def test_equals_explicit_per_sample_convolution(impl, demodulate, k):
  x, w, s = _inputs(k=k)
  got = mc.modulated_conv2d(jnp.asarray(x), jnp.asarray(w), jnp.asarray(s), demodulate=demodulate, impl=impl)
  want = mc.reference_modulated_conv2d(x, w, s, demodulate=demodulate)
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", ["up", "down"])
def test_implementations_agree_when_resampling(mode):
  x, w, s = _inputs(seed=1, h=8)
  outs = [
    mc.modulated_conv2d(jnp.asarray(x), jnp.asarray(w), jnp.asarray(s), up=mode == "up", down=mode == "down", impl=impl)
    for impl in mc.IMPLS
  ]
  assert outs[0].shape == ((3, 16, 16, 5) if mode == "up" else (3, 4, 4, 5))
  for o in outs[1:]:
    np.testing.assert_allclose(o, outs[0], atol=2e-5)


def test_demodulated_output_has_unit_scale_for_unit_input():
  # Demodulation makes each output channel's expected second moment ~1 for i.i.d. unit inputs (§2.2).
  r = np.random.default_rng(0)
  x = r.standard_normal((8, 16, 16, 64)).astype(np.float32)
  w = r.standard_normal((3, 3, 64, 32)).astype(np.float32)
  s = (3.0 * r.random((8, 64)) + 0.1).astype(np.float32)
  y = mc.modulated_conv2d(jnp.asarray(x), jnp.asarray(w), jnp.asarray(s))
  np.testing.assert_allclose(np.mean(np.asarray(y)[:, 1:-1, 1:-1] ** 2), 1.0, rtol=0.1)


def test_unknown_impl_and_up_down_together_are_refused():
  x, w, s = _inputs()
  with pytest.raises(ValueError, match="unknown impl"):
    mc.modulated_conv2d(x, w, s, impl="nope")
  with pytest.raises(ValueError, match="exclusive"):
    mc.modulated_conv2d(x, w, s, up=True, down=True)


@pytest.mark.parametrize("impl", mc.IMPLS)
def test_gradients_match_finite_differences(impl):
  with jax.enable_x64(True):
    x, w, s = (jnp.asarray(a, jnp.float64) for a in _inputs(seed=3, b=2, h=4))
    f = lambda x, w, s: jnp.sum(jnp.sin(mc.modulated_conv2d(x, w, s, up=True, impl=impl)))
    grads = jax.grad(f, argnums=(0, 1, 2))(x, w, s)
    eps = 1e-6
    for arg, (g, idx) in enumerate(zip(grads, [(1, 2, 1, 3), (1, 0, 2, 4), (0, 2)])):
      args = [x, w, s]
      plus = list(args)
      plus[arg] = args[arg].at[idx].add(eps)
      minus = list(args)
      minus[arg] = args[arg].at[idx].add(-eps)
      fd = (f(*plus) - f(*minus)) / (2 * eps)
      np.testing.assert_allclose(g[idx], fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_phase_decomposed_transposed_conv_equals_dilated_definition(k):
  # torch conv_transpose2d(stride 2) == zero-dilate the input, pad k-1, correlate with the flipped kernel.
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 6, 3))
  w = jax.random.normal(jax.random.PRNGKey(1), (k, k, 3, 4))
  want = jax.lax.conv_general_dilated(
    x, w[::-1, ::-1], (1, 1), [(k - 1, k - 1)] * 2, lhs_dilation=(2, 2), dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  got = mc.conv_transpose_stride2(x, w)
  assert got.shape == want.shape == (2, 2 * 5 + k - 2, 2 * 6 + k - 2, 4)
  np.testing.assert_allclose(got, want, atol=1e-5)
