"""StyleGAN2 generator and discriminator (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN",
CVPR 2020, config F), weight-compatible with rosinality/stylegan2-pytorch as GANgealing uses it.

Generator: mapping network (PixelNorm + `n_mlp` equalised dense layers at lr_mul 0.01) z -> w; synthesis from a
learned 4x4 constant through StyledConv pairs per resolution with ToRGB skip connections (§4.1, fig. 7b), one
latent per layer (W+, `n_latent = 2 log2(size) - 2`), per-layer noise (fixed buffers or sampled), style mixing
at an inject index and truncation against a mean latent (both conventions: GANgealing's and rosinality's).
Discriminator: fromRGB, residual blocks down to 4x4, minibatch stddev, final conv and two dense layers.

Mixed precision: `dtype` (None: follow the inputs) is the computation dtype of the convolutions and of the
discriminator's dense layers; parameters stay float32, the mapping network and style affines run in float32, and
images / logits come out in float32.

Models know nothing of files: `jaxgeal/convert/stylegan2.py` maps upstream state dicts onto these params.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgeal.models import layers
from jaxgeal.ops import modulated_conv as mc
from jaxgeal.ops.minibatch_stddev import minibatch_stddev

Array = Any


def default_channels(channel_multiplier: int = 2, size: int = 1024) -> tuple[tuple[int, int], ...]:
  """rosinality's channel dict {4..32: 512, 64: 256 cm, ..., 1024: 16 cm} as hashable (res, ch) pairs."""
  cm = channel_multiplier
  table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm, 512: 32 * cm, 1024: 16 * cm}
  return tuple((r, c) for r, c in table.items() if r <= size)


def _log2(size: int) -> int:
  log = int(math.log2(size))
  if 2**log != size or size < 4:
    raise ValueError(f"StyleGAN2 sizes are powers of two >= 4, got {size}")
  return log


def noise_resolutions(size: int) -> list[int]:
  """Resolution of noise layer i: 2**((i + 5) // 2) (layer 0 at 4x4, then two per resolution)."""
  return [2 ** ((i + 5) // 2) for i in range(2 * (_log2(size) - 2) + 1)]


def pixel_norm(x, eps: float = 1e-8):
  return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)


class Generator(nn.Module):
  """StyleGAN2 generator; images NHWC in roughly [-1, 1]."""

  size: int
  style_dim: int = 512
  n_mlp: int = 8
  channels: Sequence[tuple[int, int]] | None = None  # (resolution, channels) pairs; None: config F (cm 2)
  channel_multiplier: int = 2
  blur_kernel: Sequence[int] = (1, 3, 3, 1)
  lr_mlp: float = 0.01
  modconv_impl: str = mc.DEFAULT_IMPL
  dtype: Any = None  # synthesis convolutions' dtype; params, mapping and the RGB skips stay float32

  @property
  def log_size(self) -> int:
    return _log2(self.size)

  @property
  def n_latent(self) -> int:
    return self.log_size * 2 - 2

  @property
  def num_layers(self) -> int:
    return (self.log_size - 2) * 2 + 1

  def channel(self, res: int) -> int:
    table = dict(self.channels if self.channels is not None else default_channels(self.channel_multiplier))
    if res not in table:
      raise ValueError(f"Generator: no channel count for resolution {res} (channels={table})")
    return table[res]

  def setup(self):
    d = self.style_dim
    self.style = [
      layers.EqualLinear(d, d, lr_mul=self.lr_mlp, activation="fused_lrelu", name=f"style_{i + 1}")
      for i in range(self.n_mlp)
    ]
    c4 = self.channel(4)
    self.input = self.param("input", nn.initializers.normal(1.0), (1, 4, 4, c4))
    kw = dict(blur_kernel=self.blur_kernel, impl=self.modconv_impl, dtype=self.dtype)
    self.conv1 = layers.StyledConv(c4, c4, 3, d, **kw)
    self.to_rgb1 = layers.ToRGB(c4, d, upsample=False, **kw)
    convs, to_rgbs = [], []
    in_ch = c4
    for i in range(3, self.log_size + 1):
      out_ch = self.channel(2**i)
      convs.append(layers.StyledConv(in_ch, out_ch, 3, d, upsample=True, **kw))
      convs.append(layers.StyledConv(out_ch, out_ch, 3, d, **kw))
      to_rgbs.append(layers.ToRGB(out_ch, d, **kw))
      in_ch = out_ch
    self.convs = convs
    self.to_rgbs = to_rgbs
    # Fixed noise buffers `noises.noise_i` (used with randomize_noise=False), in their own collection.
    self.noises = [
      self.variable("noises", f"noise_{i}", lambda r=r: jax.random.normal(self.make_rng("params"), (1, r, r, 1)))
      for i, r in enumerate(noise_resolutions(self.size))
    ]

  # -- mapping ----------------------------------------------------------------------------------------------
  def mapping(self, z):
    """z (B, D) -> w (B, D): PixelNorm then the MLP."""
    x = pixel_norm(z)
    for layer in self.style:
      x = layer(x)
    return x

  def mean_latent(self, z):
    """Mean of the mapped z (the truncation latent), (1, D)."""
    return jnp.mean(self.mapping(z), axis=0, keepdims=True)

  # -- synthesis --------------------------------------------------------------------------------------------
  def make_noise(self, batch: int, randomize_noise: bool = True):
    """Per-layer noise: fresh N(0, 1) draws from the 'noise' RNG stream, or the fixed buffers."""
    if randomize_noise:
      rng = self.make_rng("noise")
      keys = jax.random.split(rng, self.num_layers)
      return [jax.random.normal(k, (batch, r, r, 1)) for k, r in zip(keys, noise_resolutions(self.size))]
    return [v.value for v in self.noises]

  def synthesis(self, latent, noise=None, randomize_noise: bool = True):
    """W+ latent (B, n_latent, D) -> image (B, size, size, 3).

    Latent index per layer: conv1 -> 0, to_rgb1 -> 1, then per resolution j: conv(up) -> 2j - 1,
    conv -> 2j, to_rgb -> 2j + 1.
    """
    b = latent.shape[0]
    if noise is None:
      noise = self.make_noise(b, randomize_noise)
    if len(noise) != self.num_layers:
      raise ValueError(f"Generator: expected {self.num_layers} noise maps, got {len(noise)}")
    out = jnp.broadcast_to(self.input.astype(latent.dtype), (b,) + self.input.shape[1:])
    out = self.conv1(out, latent[:, 0], noise[0])
    skip = self.to_rgb1(out, latent[:, 1])
    i = 1
    for j, to_rgb in enumerate(self.to_rgbs):
      out = self.convs[2 * j](out, latent[:, i], noise[2 * j + 1])
      out = self.convs[2 * j + 1](out, latent[:, i + 1], noise[2 * j + 2])
      skip = to_rgb(out, latent[:, i + 2], skip)
      i += 2
    return skip

  # -- the upstream-style entry point -----------------------------------------------------------------------
  def __call__(
    self,
    styles,
    *,
    input_is_latent: bool = False,
    noise=None,
    randomize_noise: bool = True,
    truncation: float = 1.0,
    truncation_latent=None,
    inject_index=None,
    truncation_mode: str = "gangealing",
    return_latents: bool = False,
  ):
    """G(styles) as upstream's Generator.forward.

    Args:
      styles: an array or a list of one or two arrays: z (B, D), or w (B, D) / W+ (B, n_latent, D) when
        `input_is_latent`. Two styles are mixed at `inject_index`.
      noise: list of (B, r, r, 1) maps, or None for the buffers / random draws (`randomize_noise`).
      truncation, truncation_latent: psi and the mean latent (1, D).
      inject_index: split point of style mixing; None draws one uniformly in [1, n_latent - 1] from the
        'mixing' RNG stream (upstream: `random.randint`). May be a traced integer.
      truncation_mode: "gangealing" mixes [truncated w, w] at inject_index (so only
        inject_index = n_latent truncates every layer, and a second style is ignored; what GANgealing's
        copy does); "rosinality" truncates every input style and then mixes.
    Returns:
      image (B, size, size, 3), and the W+ latent (B, n_latent, D) when `return_latents`.
    """
    if not isinstance(styles, (list, tuple)):
      styles = [styles]
    if not input_is_latent:
      styles = [self.mapping(s) for s in styles]
    if truncation < 1:
      if truncation_latent is None:
        raise ValueError("Generator: truncation < 1 needs truncation_latent (see mean_latent)")
      trunc = lambda s: truncation_latent + truncation * (s - truncation_latent)
      if truncation_mode == "gangealing":
        styles = [trunc(styles[0]), styles[0]]
      elif truncation_mode == "rosinality":
        styles = [trunc(s) for s in styles]
      else:
        raise ValueError(f"Generator: unknown truncation_mode {truncation_mode!r}")
    n = self.n_latent
    if len(styles) == 1:
      s = styles[0]
      latent = s if s.ndim == 3 else jnp.broadcast_to(s[:, None], (s.shape[0], n, s.shape[-1]))
    else:
      if inject_index is None:
        inject_index = jax.random.randint(self.make_rng("mixing"), (), 1, n)
      layer = jnp.arange(n)[None, :, None]
      latent = jnp.where(layer < inject_index, styles[0][:, None], styles[1][:, None])
    image = self.synthesis(latent, noise=noise, randomize_noise=randomize_noise)
    return (image, latent) if return_latents else image


class Discriminator(nn.Module):
  """StyleGAN2 residual discriminator (rosinality `Discriminator`); input NHWC, output (B, 1) logits."""

  size: int
  channels: Sequence[tuple[int, int]] | None = None
  channel_multiplier: int = 2
  blur_kernel: Sequence[int] = (1, 3, 3, 1)
  stddev_group: int = 4
  stddev_feat: int = 1
  dtype: Any = None  # computation dtype (None: the input's); params stay float32, logits come out float32

  def channel(self, res: int) -> int:
    table = dict(self.channels if self.channels is not None else default_channels(self.channel_multiplier))
    return table[res]

  def setup(self):
    log_size = _log2(self.size)
    dt = self.dtype
    convs = [layers.ConvLayer(3, self.channel(self.size), 1, dtype=dt)]
    in_ch = self.channel(self.size)
    for i in range(log_size, 2, -1):
      out_ch = self.channel(2 ** (i - 1))
      convs.append(layers.ResBlock(in_ch, out_ch, blur_kernel=self.blur_kernel, dtype=dt))
      in_ch = out_ch
    self.convs = convs
    c4 = self.channel(4)
    self.final_conv = layers.ConvLayer(in_ch + self.stddev_feat, c4, 3, dtype=dt)
    self.final_linear = [
      layers.EqualLinear(c4 * 4 * 4, c4, activation="fused_lrelu", dtype=dt),
      layers.EqualLinear(c4, 1, dtype=dt),
    ]

  def features(self, x):
    """Activations before minibatch stddev, (B, 4, 4, C4)."""
    for conv in self.convs:
      x = conv(x)
    return x

  def __call__(self, x):
    out = self.features(x)
    if self.stddev_feat:  # the Swapping Autoencoder's D has none (stddev_feat=0)
      out = minibatch_stddev(out, self.stddev_group, self.stddev_feat)
    out = self.final_conv(out)
    # Flattened in (H, W, C) order; the converter permutes upstream's (C, H, W)-ordered weight to match.
    out = out.reshape(out.shape[0], -1)
    for layer in self.final_linear:
      out = layer(out)
    return layers.full_precision(out)


# -- construction from configs (converter, trainers, model directories) ----------------------------------------


def generator_from_config(config: Mapping, **overrides) -> Generator:
  """The Generator of a model config ({size, style_dim, n_mlp, channels[, lr_mlp, blur_kernel]}); overrides win."""
  kw = dict(
    size=config["size"],
    style_dim=config["style_dim"],
    n_mlp=config["n_mlp"],
    channels=tuple(tuple(c) for c in config["channels"]),
    lr_mlp=config.get("lr_mlp", 0.01),
    blur_kernel=tuple(config.get("blur_kernel", (1, 3, 3, 1))),
  )
  kw.update(overrides)
  return Generator(**kw)


def discriminator_from_config(config: Mapping, **overrides) -> Discriminator:
  """The Discriminator of a model config ({size, channels[, stddev_feat, blur_kernel]}); overrides win."""
  kw = dict(
    size=config["size"],
    channels=tuple(tuple(c) for c in config["channels"]),
    stddev_feat=config.get("stddev_feat", 1),
    blur_kernel=tuple(config.get("blur_kernel", (1, 3, 3, 1))),
  )
  kw.update(overrides)
  return Discriminator(**kw)
