"""StyleGAN2 losses: parity with rosinality's train.py (fixture `stylegan2_losses`), including the
second-order gradients of R1 and of the path-length penalty with respect to network weights.

Tolerance: 1e-4 absolute on losses; gradients 1e-4 relative to their largest magnitude.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgeal.convert import stylegan2 as convert
from jaxgeal.losses import stylegan2 as losses
from jaxgeal.models import stylegan2
from tests import fixtures
from tests.fixtures import assert_close, nchw_to_nhwc

ATOL = 1e-4


def _recorded_gradients(fx) -> list[tuple[str, str, str, str]]:
  """(array name, loss, network, upstream parameter key) of every recorded gradient, read from the meanings
  'd <loss> / d <net>.<key>' (e.g. 'd r1_penalty / d D.convs.0.0.weight')."""
  out = []
  for name, meta in fx.meta["arrays"].items():
    m = re.match(r"d (\w+) / d (\w+)\.(\S+)", meta["meaning"])
    if m and meta["kind"] == "output":
      out.append((name, m.group(1), m.group(2).lower(), m.group(3)))
  return out


@pytest.mark.parity
@pytest.mark.parametrize("fx", fixtures.collect("stylegan2_losses"))
def test_stylegan2_losses_match_upstream(fx):
  models = convert.convert_checkpoint(fixtures.load_checkpoint(fx, fx.checkpoint_file()))
  _, gcfg, gv = models["g"]
  _, dcfg, dv = models["d"]
  G, D = stylegan2.generator_from_config(gcfg), stylegan2.discriminator_from_config(dcfg)
  a = fx.arrays

  fake = G.apply(gv, jnp.asarray(a["z_fake"]), randomize_noise=False)
  assert_close(fake, nchw_to_nhwc(a["fake_img"]), ATOL, "fake_img")
  real = jnp.asarray(nchw_to_nhwc(a["real_img"]))
  real_pred, fake_pred = D.apply(dv, real), D.apply(dv, fake)
  assert_close(real_pred, a["real_pred"], ATOL, "real_pred")
  assert_close(fake_pred, a["fake_pred"], ATOL, "fake_pred")
  assert_close(losses.d_logistic_loss(real_pred, fake_pred), a["d_loss"], ATOL, "d_loss")
  assert_close(losses.g_nonsaturating_loss(fake_pred), a["g_loss"], ATOL, "g_loss")

  # R1, lazily weighted as train.py does; gradients w.r.t. D params are second order.
  r1_fn = lambda p: losses.d_r1_loss(lambda x: D.apply({"params": p}, x), real)[0]
  r1, r1_grads = jax.value_and_grad(r1_fn)(dv["params"])
  assert_close(r1, a["r1_penalty"], ATOL, "r1_penalty")
  kw = fixtures.call_kwargs(fx.meta["arrays"]["d_reg_loss"]["meaning"])
  assert_close(kw["r1"] / 2 * r1 * kw["d_reg_every"], a["d_reg_loss"], ATOL * 100, "d_reg_loss")

  # Path length regularisation against the recorded W+ latents and noise draw.
  kw = fixtures.call_kwargs(fx.call("path_penalty")["call"])
  noise = jnp.asarray(nchw_to_nhwc(fx.sequence("path_noise")[0]))

  def path_fn(p):
    # As train.py: the latents come out of the mapping network (g([path_z], return_latents=True)), so the
    # penalty also reaches the mapping weights through them.
    _, latents = G.apply({**gv, "params": p}, jnp.asarray(a["path_z"]), randomize_noise=False, return_latents=True)
    synth = lambda lat: G.apply({**gv, "params": p}, lat, None, False, method=G.synthesis)
    pen, mean, lengths, img = losses.g_path_regularize(synth, latents, noise, kw["mean_path_length"], kw["decay"])
    return pen, (mean, lengths, img, latents)

  (pen, (mean, lengths, img, latents)), p_grads = jax.value_and_grad(path_fn, has_aux=True)(gv["params"])
  assert_close(latents, a["path_latents"], ATOL, "path_latents")
  assert_close(img, nchw_to_nhwc(a["path_fake_img"]), ATOL, "path_fake_img")
  assert_close(pen, a["path_penalty"], ATOL, "path_penalty")
  assert_close(mean, a["path_mean"], ATOL, "path_mean")
  assert_close(lengths, a["path_lengths"], ATOL, "path_lengths")
  # Every recorded gradient, through the converter's own key map (our layout back to upstream's).
  grads = {"r1_penalty": (convert.DISCRIMINATOR_KEYS, r1_grads), "path_penalty": (convert.GENERATOR_KEYS, p_grads)}
  recorded = _recorded_gradients(fx)
  assert recorded, f"{fx.id}: no recorded gradients"
  for name, loss, net, key in recorded:
    keymap, tree = grads[loss]
    assert net == {"r1_penalty": "d", "path_penalty": "g"}[loss], f"{name}: {loss} is not a loss of {net}"
    assert_close(keymap.upstream_value(key, {"params": tree}), a[name], 0, name, rtol=1e-4)


def test_logistic_losses_are_softplus_of_the_logits():
  real, fake = jnp.array([[2.0], [-1.0]]), jnp.array([[0.5], [-3.0]])
  sp = lambda x: np.log1p(np.exp(x))
  np.testing.assert_allclose(
    losses.d_logistic_loss(real, fake), np.mean(sp(-np.asarray(real))) + np.mean(sp(np.asarray(fake))), rtol=1e-6
  )
  np.testing.assert_allclose(losses.g_nonsaturating_loss(fake), np.mean(sp(-np.asarray(fake))), rtol=1e-6)


def test_r1_of_a_linear_discriminator_is_its_squared_weight_norm():
  w = jax.random.normal(jax.random.PRNGKey(0), (4, 4, 3))
  disc = lambda x: jnp.sum(x * w, axis=(1, 2, 3))[:, None]
  pen, _ = losses.d_r1_loss(disc, jnp.zeros((2, 4, 4, 3)))
  np.testing.assert_allclose(pen, np.sum(np.asarray(w) ** 2), rtol=1e-5)


def test_path_length_of_a_linear_map_and_running_mean_update():
  # images = latents @ A: J^T y = y A^T per sample; with y = ones/sqrt(HW) the length is computable by hand.
  A = jax.random.normal(jax.random.PRNGKey(1), (3, 2 * 2 * 1))
  synth = lambda lat: (lat.reshape(lat.shape[0], -1) @ A).reshape(-1, 2, 2, 1)
  lat = jnp.ones((2, 1, 3))
  noise = jnp.ones((2, 2, 2, 1))
  pen, mean, lengths, _ = losses.g_path_regularize(synth, lat, noise, jnp.float32(0.0), decay=0.5)
  expected = np.sqrt(np.sum((np.asarray(A) @ (np.ones(4) / 2.0)) ** 2))
  np.testing.assert_allclose(lengths, [expected, expected], rtol=1e-5)
  np.testing.assert_allclose(mean, 0.5 * expected, rtol=1e-5)
  np.testing.assert_allclose(pen, (0.5 * expected) ** 2, rtol=1e-5)
