"""Swapping Autoencoder losses: parity with upstream's `compute_generator_losses`, `compute_discriminator_losses`
and `compute_R1_loss` on every `swapae` fixture, with upstream's random-crop draws replayed (the `lossG_rand_*`,
`lossD_rand_*`, `lossR1_rand_*` arrays) and its fixed generator noise. Which losses exist, their per-sample
shapes and the loss options all come from the json. Tolerance: relative 1e-4 (and 1e-6 absolute).
"""

import jax
import jax.numpy as jnp
import pytest

from jaxgeal.losses import swapae as losses
from tests import fixtures
from tests.fixtures import assert_close, nchw_to_nhwc
from tests.models.swapae_test import Nets, crop_draws

RTOL, ATOL = 1e-4, 1e-6


@pytest.fixture(scope="module", params=fixtures.collect("swapae"))
def case(request):
  fx = request.param
  return fx, Nets(fx)


def _check(fx, ours: dict, prefix: str):
  recorded = sorted(name for name in fx.arrays if name.startswith(prefix) and "_rand_" not in name)
  assert recorded, f"{fx.id}: no {prefix}* outputs"
  for name in recorded:
    key = name[len(prefix) :]
    assert key in ours, f"{fx.id}: upstream records {key!r}, we compute {sorted(ours)}"
    assert_close(ours[key], fx[name], ATOL, name, rtol=RTOL)


def test_generator_losses_match_upstream(case):
  fx, nets = case
  real = jnp.asarray(nchw_to_nhwc(fx["real"]))
  step = jax.jit(
    lambda x, d: losses.generator_losses(nets.networks(), x, jax.random.PRNGKey(0), d, nets.loss_options())
  )
  got, metrics = step(real, crop_draws(fx, "lossG_rand"))
  _check(fx, got, "lossG_")
  _check(fx, metrics, "metricG_")


def test_discriminator_losses_match_upstream(case):
  fx, nets = case
  real = jnp.asarray(nchw_to_nhwc(fx["real"]))
  step = jax.jit(
    lambda x, d: losses.discriminator_losses(nets.networks(), x, jax.random.PRNGKey(0), d, nets.loss_options())
  )
  _check(fx, step(real, crop_draws(fx, "lossD_rand")), "lossD_")


def test_r1_loss_matches_upstream(case):
  fx, nets = case
  real = jnp.asarray(nchw_to_nhwc(fx["real"]))
  step = jax.jit(lambda x, d: losses.r1_loss(nets.networks(), x, d, nets.loss_options()))
  _check(fx, step(real, crop_draws(fx, "lossR1_rand")), "lossR1_")


def test_total_is_the_sum_of_means():
  assert float(losses.total({"a": jnp.array([1.0, 3.0]), "b": jnp.array(5.0)})) == 7.0
  # Every weight 0 (an autoencoder without GAN terms): nothing to minimise, still a differentiable float.
  assert jax.grad(lambda w: losses.total({}) * w)(1.0) == 0.0


def test_gan_loss_is_per_sample_softplus():
  pred = jnp.array([[0.0], [2.0]])
  assert_close(losses.gan_loss(pred, True), jax.nn.softplus(-pred[:, 0]), 1e-7, "real")
  assert_close(losses.gan_loss(pred, False), jax.nn.softplus(pred[:, 0]), 1e-7, "fake")
