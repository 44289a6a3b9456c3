"""StyleGAN2 training losses (Karras et al. 2020, §3.2 "lazy regularization", §3.2 eq. 4 path length;
Mescheder et al. 2018 R1), as rosinality's train.py computes them.

  d_logistic_loss      softplus(-D(x)) + softplus(D(G(z)))                   (non-saturating logistic)
  g_nonsaturating_loss softplus(-D(G(z)))
  d_r1_loss            E ||grad_x D(x)||^2   (the trainer weighs it by r1/2 * d_reg_every)
  g_path_regularize    E (||J_w^T y||_2 - a)^2, y ~ N(0, I)/sqrt(HW), a the running mean of the lengths

Functions take callables (images -> logits, latents -> images) so they stay independent of module plumbing;
the trainer closes over params and differentiates through them (R1 and path length are second order).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def d_logistic_loss(real_pred: jax.Array, fake_pred: jax.Array) -> jax.Array:
  return jnp.mean(jax.nn.softplus(-real_pred)) + jnp.mean(jax.nn.softplus(fake_pred))


def g_nonsaturating_loss(fake_pred: jax.Array) -> jax.Array:
  return jnp.mean(jax.nn.softplus(-fake_pred))


def d_r1_loss(discriminator: Callable[[jax.Array], jax.Array], real_img: jax.Array):
  """R1 = mean over the batch of sum over pixels of (dD/dx)^2. Returns (penalty, real_pred)."""
  real_pred, vjp = jax.vjp(discriminator, real_img)
  (grad,) = vjp(jnp.ones_like(real_pred))  # d sum(D(x)) / dx
  penalty = jnp.mean(jnp.sum(jnp.square(grad).reshape(grad.shape[0], -1), axis=1))
  return penalty, real_pred


def g_path_regularize(
  synthesis: Callable[[jax.Array], jax.Array],
  latents: jax.Array,
  noise: jax.Array,
  mean_path_length: jax.Array,
  decay: float = 0.01,
):
  """Path length regularizer.

  Args:
    synthesis: W+ latents (B, n_latent, D) -> images (B, H, W, C).
    latents: the W+ latents the images are generated from.
    noise: N(0, 1) draws shaped like the images (divided here by sqrt(H W), as upstream).
    mean_path_length: running mean a (scalar).
  Returns:
    (penalty, new mean_path_length (no gradient), path_lengths (B,), images).
  """
  images, vjp = jax.vjp(synthesis, latents)
  h, w = images.shape[1], images.shape[2]
  (grad,) = vjp(noise.astype(images.dtype) / jnp.sqrt(float(h * w)))  # J^T y, (B, n_latent, D)
  path_lengths = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(grad), axis=2), axis=1))
  # As upstream, the penalty is taken against the *updated* mean, with its gradient (decay * mean).
  path_mean = mean_path_length + decay * (jnp.mean(path_lengths) - mean_path_length)
  penalty = jnp.mean(jnp.square(path_lengths - path_mean))
  return penalty, jax.lax.stop_gradient(path_mean), path_lengths, images
