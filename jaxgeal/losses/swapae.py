"""Swapping Autoencoder training losses (Park et al. 2020, §3.1-3.2, eq. 1-3 and appendix B), as upstream's
`SwappingAutoencoderModel.compute_{generator,discriminator}_losses` and `compute_R1_loss` compute them
(taesungp/swapping-autoencoder-pytorch, commit 6baa180f1184ee79a6b967f9d80ee0e02a979ac7,
models/swapping_autoencoder_model.py, util/util.py `apply_random_crop`).

  generator:     L1(G(E(x)), x) on half the batch; non-saturating GAN on that reconstruction (x 0.5) and on the
                 hybrids G(swap(structure), texture); patch co-occurrence GAN of hybrid crops against the
                 texture source's crops
  discriminator: logistic GAN on real / reconstruction (x 0.5) / hybrid (x 0.5), patch co-occurrence GAN
  R1:            on images (x lambda_R1 / 2) and on both crop sets (x lambda_patch_R1 / 4), per sample

Losses are returned per sample, as upstream's dicts; the step sums their means. Functions take callables (the
networks with their params closed over) and the uniform draws of the random crops, so tests can replay
upstream's draws and trainers draw them from a key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxgeal.models.swapae import swap
from jaxgeal.ops import warp

# (flip (N,), scale (N, 2), offset (N, 2)) uniforms in [0, 1) for N = batch * num_crops crops, (x, y) order.
CropDraws = tuple[jax.Array, jax.Array, jax.Array]


@dataclasses.dataclass(frozen=True)
class Options:
  """Upstream's loss options (option names kept)."""

  lambda_L1: float = 1.0
  lambda_GAN: float = 1.0
  lambda_PatchGAN: float = 1.0
  lambda_R1: float = 10.0
  lambda_patch_R1: float = 1.0
  patch_size: int = 128
  patch_min_scale: float = 1 / 8
  patch_max_scale: float = 1 / 4
  patch_num_crops: int = 8
  patch_use_aggregation: bool = True
  crop_size: int = 256  # image size; at >= 1024 upstream judges only half of the hybrids to save memory


@dataclasses.dataclass(frozen=True)
class Networks:
  """The four networks as callables with their params closed over.

  decode(structure, texture, key) -> images draws its noise from `key` (or ignores it for fixed noise).
  """

  encode: Callable[[jax.Array], tuple[jax.Array, jax.Array]]
  decode: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
  discriminate: Callable[[jax.Array], jax.Array]
  patch_features: Callable[[jax.Array, bool], jax.Array]  # (B, T, P, P, 3), aggregate -> (B T, h, w, C)
  patch_discriminate: Callable[[jax.Array, jax.Array], jax.Array]  # reference, query features -> (B T, 1)


def draw_crops(key: jax.Array, n_calls: int, batch: int, num_crops: int) -> list[CropDraws]:
  """Uniform draws for `n_calls` calls of `random_crops` on a batch of `batch` images."""
  n = batch * num_crops
  out = []
  for k in jax.random.split(key, n_calls):
    kf, ks, ko = jax.random.split(k, 3)
    out.append((jax.random.uniform(kf, (n,)), jax.random.uniform(ks, (n, 2)), jax.random.uniform(ko, (n, 2))))
  return out


def random_crops(x: jax.Array, size: int, scale_range: tuple[float, float], num_crops: int, draws: CropDraws):
  """upstream `apply_random_crop`: `num_crops` crops per image of side `scale` (a fraction in scale_range, per
  axis) of the image at a random offset, randomly mirrored, bilinearly resampled to size x size (zeros outside).

  (B, H, W, C) -> (B, num_crops, size, size, C).
  """
  flip_u, scale_u, offset_u = draws
  b = x.shape[0]
  n = b * num_crops
  flip = jnp.round(flip_u.reshape(n)) * 2 - 1.0
  lo, hi = scale_range
  scale = scale_u.reshape(n, 1, 1, 2) * (hi - lo) + lo
  offset = (offset_u.reshape(n, 1, 1, 2) * 2 - 1) * (1 - scale)
  t = jnp.linspace(-1.0, 1.0, size)
  unit = jnp.stack(jnp.broadcast_arrays(t[None, :] * flip[:, None, None], t[None, :, None]), -1)
  grid = unit * scale + offset
  crops = warp.grid_sample(jnp.repeat(x, num_crops, axis=0), grid.astype(x.dtype))
  return crops.reshape(b, num_crops, size, size, x.shape[-1])


def gan_loss(pred: jax.Array, real: bool) -> jax.Array:
  """Per-sample non-saturating logistic loss: softplus(-pred) if pred should be real else softplus(pred)."""
  loss = jax.nn.softplus(-pred if real else pred)
  return jnp.mean(loss.reshape(loss.shape[0], -1), axis=1)


def _crops(x, opts: Options, draws: CropDraws):
  return random_crops(x, opts.patch_size, (opts.patch_min_scale, opts.patch_max_scale), opts.patch_num_crops, draws)


def generator_losses(nets: Networks, real: jax.Array, key: jax.Array, crops: Sequence[CropDraws], opts: Options):
  """compute_generator_losses: (losses, metrics) with per-sample losses; `crops`: draws for the 2 crop calls."""
  b = real.shape[0]
  k_rec, k_mix = jax.random.split(key)
  structure, texture = nets.encode(real)
  rec = nets.decode(structure[: b // 2], texture[: b // 2], k_rec)  # half the batch, to save memory (upstream)
  structure_mix = swap(structure)
  l1 = jnp.mean(jnp.abs(rec - real[: b // 2]))
  losses, metrics = {}, {"L1_dist": l1}
  if opts.lambda_L1 > 0:
    losses["G_L1"] = l1 * opts.lambda_L1
  if opts.crop_size >= 1024:
    real, texture, structure_mix = real[b // 2 :], texture[b // 2 :], structure_mix[b // 2 :]
  mix = nets.decode(structure_mix, texture, k_mix)
  if opts.lambda_GAN > 0:
    losses["G_GAN_rec"] = gan_loss(nets.discriminate(rec), True) * (opts.lambda_GAN * 0.5)
    losses["G_GAN_mix"] = gan_loss(nets.discriminate(mix), True) * opts.lambda_GAN
  if opts.lambda_PatchGAN > 0:
    real_feat = jax.lax.stop_gradient(nets.patch_features(_crops(real, opts, crops[0]), opts.patch_use_aggregation))
    mix_feat = nets.patch_features(_crops(mix, opts, crops[1]), False)
    losses["G_mix"] = gan_loss(nets.patch_discriminate(real_feat, mix_feat), True) * opts.lambda_PatchGAN
  return losses, metrics


def discriminator_losses(nets: Networks, real: jax.Array, key: jax.Array, crops: Sequence[CropDraws], opts: Options):
  """compute_discriminator_losses: per-sample losses; E and G are not differentiated; 3 crop calls."""
  b = real.shape[0]
  k_rec, k_mix = jax.random.split(key)
  structure, texture = jax.lax.stop_gradient(nets.encode(real))
  rec = jax.lax.stop_gradient(nets.decode(structure[: b // 2], texture[: b // 2], k_rec))
  mix = jax.lax.stop_gradient(nets.decode(swap(structure), texture, k_mix))
  losses = {}
  if opts.lambda_GAN > 0:
    losses["D_real"] = gan_loss(nets.discriminate(real), True) * opts.lambda_GAN
    losses["D_rec"] = gan_loss(nets.discriminate(rec), False) * (0.5 * opts.lambda_GAN)
    losses["D_mix"] = gan_loss(nets.discriminate(mix), False) * (0.5 * opts.lambda_GAN)
  if opts.lambda_PatchGAN > 0:
    real_feat = nets.patch_features(_crops(real, opts, crops[0]), opts.patch_use_aggregation)
    target_feat = nets.patch_features(_crops(real, opts, crops[1]), False)
    mix_feat = nets.patch_features(_crops(mix, opts, crops[2]), False)
    losses["PatchD_real"] = gan_loss(nets.patch_discriminate(real_feat, target_feat), True) * opts.lambda_PatchGAN
    losses["PatchD_mix"] = gan_loss(nets.patch_discriminate(real_feat, mix_feat), False) * opts.lambda_PatchGAN
  return losses


def r1_loss(nets: Networks, real: jax.Array, crops: Sequence[CropDraws], opts: Options) -> dict:
  """compute_R1_loss: {"D_R1": (B,)} = lambda_R1/2 |dD/dx|^2 + lambda_patch_R1/4 (|dDp/dcrop|^2 + |dDp/dtarget|^2)
  per image, the gradients of the summed predictions; 2 crop calls."""
  b = real.shape[0]
  penalty = jnp.zeros((b,), real.dtype)

  def sq_norm(g):
    return jnp.sum(jnp.square(g).reshape(g.shape[0], -1), axis=1)

  if opts.lambda_R1 > 0:
    grad = jax.grad(lambda x: jnp.sum(nets.discriminate(x)))(real)
    penalty = penalty + sq_norm(grad) * (opts.lambda_R1 * 0.5)
  if opts.lambda_patch_R1 > 0:
    real_crop = jax.lax.stop_gradient(_crops(real, opts, crops[0]))
    target_crop = jax.lax.stop_gradient(_crops(real, opts, crops[1]))

    def patch_pred(rc, tc):
      ref = nets.patch_features(rc, opts.patch_use_aggregation)
      return jnp.sum(nets.patch_discriminate(ref, nets.patch_features(tc, False)))

    g_real, g_target = jax.grad(patch_pred, argnums=(0, 1))(real_crop, target_crop)
    penalty = penalty + (sq_norm(g_real) + sq_norm(g_target)) * (0.5 * opts.lambda_patch_R1 * 0.5)
  return {"D_R1": penalty}


def total(losses: dict) -> jax.Array:
  """What the optimizer minimises: the sum of each loss's mean (upstream's `sum(v.mean() ...)`); a float 0 when
  every weight is 0 (e.g. lambda_GAN = lambda_PatchGAN = 0 leaves the discriminators nothing to learn)."""
  return sum((jnp.mean(v) for v in losses.values()), jnp.zeros((), jnp.float32))
