"""Minibatch standard deviation layer (Karras et al., ProGAN 2018 §3; StyleGAN2 discriminator).

rosinality groups `min(B, group_size)` samples with `view(group, -1, ...)`: sample b belongs to sub-group
`b % (B // group)`, i.e. the group axis is the *outer* one. The per-group statistic is the standard deviation
over the group (biased, + 1e-8 inside the sqrt), averaged over (features, H, W) of each of `n_features`
channel splits, and appended as extra channels.
"""

import jax
import jax.numpy as jnp


def minibatch_stddev(x: jax.Array, group_size: int = 4, n_features: int = 1) -> jax.Array:
  """x: (B, H, W, C) -> (B, H, W, C + n_features)."""
  b, h, w, c = x.shape
  group = min(b, group_size)
  if b % group:
    raise ValueError(f"minibatch_stddev: batch {b} is not divisible by the group size {group}")
  y = x.reshape(group, b // group, h, w, n_features, c // n_features).astype(jnp.float32)
  y = jnp.sqrt(jnp.var(y, axis=0) + 1e-8)  # (B/group, H, W, F, C/F)
  y = jnp.mean(y, axis=(1, 2, 4))  # (B/group, F)
  y = jnp.tile(y, (group, 1))  # sample b -> sub-group b % (B/group)
  y = jnp.broadcast_to(y[:, None, None, :], (b, h, w, n_features)).astype(x.dtype)
  return jnp.concatenate([x, y], axis=-1)
