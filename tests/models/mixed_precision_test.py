"""Mixed precision (`config.dtype="bfloat16"`, the models' `dtype` field): convolutions and matmuls run in bfloat16,
parameters and their gradients stay float32, outputs come back in float32, and a tiny StyleGAN2 lands within a
loose tolerance of its float32 self (relative L2 error <= 5e-2; benchmarks/precision.md measures bfloat16 against
upstream on the parity fixtures). Errors were 5e-3 to 7e-3 on this CPU; the float32 default is checked by the
parity tests."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgeal.models import stylegan2

TINY = dict(size=16, style_dim=8, n_mlp=2, channels=((4, 16), (8, 16), (16, 8)))
REL_L2_TOL = 5e-2


def op_dtypes(fn, *args) -> dict[str, set[str]]:
  """{primitive: dtypes of its outputs} for the convolutions and matmuls of fn's jaxpr (nested ones included)."""
  text = str(jax.make_jaxpr(fn)(*args))
  out = {}
  for dtype, prim in re.findall(r"(\w+)\[[\d,]*\] = (conv_general_dilated|dot_general)\b", text):
    out.setdefault(prim, set()).add(dtype)
  return out


def rel_l2(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def nets():
  """float32 and bfloat16 generator / discriminator sharing one set of (float32) variables."""
  G32, G16 = (stylegan2.Generator(**TINY, dtype=dt) for dt in (jnp.float32, jnp.bfloat16))
  D32, D16 = (stylegan2.Discriminator(16, channels=TINY["channels"], dtype=dt) for dt in (jnp.float32, jnp.bfloat16))
  z = jax.random.normal(jax.random.PRNGKey(0), (4, TINY["style_dim"]))
  gv = jax.jit(lambda k: G16.init(k, z, randomize_noise=False))(jax.random.PRNGKey(1))
  dv = jax.jit(lambda k: D16.init(k, jnp.zeros((4, 16, 16, 3))))(jax.random.PRNGKey(2))
  return dict(G32=G32, G16=G16, D32=D32, D16=D16, gv=gv, dv=dv, z=z)


def test_bfloat16_models_keep_float32_parameters(nets):
  leaves = jax.tree_util.tree_leaves((nets["gv"], nets["dv"]))
  assert leaves and {x.dtype for x in leaves} == {jnp.dtype(jnp.float32)}


def test_bfloat16_models_convolve_and_multiply_in_bfloat16(nets):
  G = lambda m: lambda z: m.apply(nets["gv"], z, randomize_noise=False)
  D = lambda m: lambda x: m.apply(nets["dv"], x)
  x = jnp.zeros((4, 16, 16, 3))
  assert op_dtypes(G(nets["G32"]), nets["z"]) == {"conv_general_dilated": {"f32"}, "dot_general": {"f32"}}
  assert op_dtypes(D(nets["D32"]), x) == {"conv_general_dilated": {"f32"}, "dot_general": {"f32"}}
  # The generator's mapping network, style affines and demodulation sums stay float32 (its only matmuls).
  assert op_dtypes(G(nets["G16"]), nets["z"]) == {"conv_general_dilated": {"bf16"}, "dot_general": {"f32"}}
  assert op_dtypes(D(nets["D16"]), x) == {"conv_general_dilated": {"bf16"}, "dot_general": {"bf16"}}


def test_bfloat16_outputs_are_float32_and_close_to_float32(nets):
  run = jax.jit(
    lambda gv, dv, z: [
      (img, m_d.apply(dv, img))
      for m_g, m_d in ((nets["G32"], nets["D32"]), (nets["G16"], nets["D16"]))
      for img in [m_g.apply(gv, z, randomize_noise=False)]
    ]
  )
  (img32, d32), (img16, d16) = run(nets["gv"], nets["dv"], nets["z"])
  assert img16.dtype == d16.dtype == jnp.float32
  assert 0 < rel_l2(img16, img32) <= REL_L2_TOL
  assert 0 < rel_l2(d16, d32) <= REL_L2_TOL


def test_bfloat16_parameter_gradients_are_float32_and_finite(nets):
  def loss(dv, gv):
    img = nets["G16"].apply(gv, nets["z"], randomize_noise=False)
    return jnp.mean(jax.nn.softplus(-nets["D16"].apply(dv, img)))

  grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(nets["dv"], nets["gv"])
  leaves = jax.tree_util.tree_leaves(grads)
  assert {g.dtype for g in leaves} == {jnp.dtype(jnp.float32)}
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
