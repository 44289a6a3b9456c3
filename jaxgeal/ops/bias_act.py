"""Bias + leaky ReLU scaled by sqrt(2) (StyleGAN2 "fused_bias_act", Karras et al. 2020).

The sqrt(2) gain keeps the activations' second moment at 1 after a leaky ReLU of slope 0.2 on unit-variance
input (He et al. 2015), which equalised learning rate relies on.
"""

import math

import jax
import jax.numpy as jnp

SQRT2 = math.sqrt(2.0)


def fused_leaky_relu(
  x: jax.Array, bias: jax.Array | None = None, negative_slope: float = 0.2, scale: float = SQRT2
) -> jax.Array:
  """leaky_relu(x + bias, negative_slope) * scale, bias broadcast along the last (channel) axis."""
  if bias is not None:
    x = x + bias.astype(x.dtype)
  return jnp.where(x >= 0, x, x * negative_slope) * scale
