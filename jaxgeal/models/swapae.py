"""Swapping Autoencoder networks (Park et al., "Swapping Autoencoder for Deep Image Manipulation", NeurIPS 2020,
§3 and appendix B, fig. 18) in Flax Linen, NHWC.

An encoder maps an image to a *structure code* (a low-resolution, channel-normalised map) and a *texture code* (a
normalised vector); a generator decodes any (structure, texture) pair back to an image. Training (losses/swapae.py)
swaps codes between images and judges the hybrids with an image discriminator and a patch co-occurrence
discriminator that compares crops of the hybrid with crops of the texture source.

Follows taesungp/swapping-autoencoder-pytorch, commit 6baa180f1184ee79a6b967f9d80ee0e02a979ac7,
models/networks/{encoder,generator,discriminator,patch_discriminator}.py, built from jaxgeal's StyleGAN2 layers
(models/layers.py). Every width comes from an argument; `widths_from_options` computes upstream's widths from its
options, so narrow test models and the paper's models are the same code. Module names follow upstream's
attributes so checkpoints convert by renaming (convert/swapae.py).

Mixed precision: every network has a `dtype` (None: the input's), the computation dtype of its convolutions and
dense layers; parameters stay float32, code normalisation, demodulation and the RGB output are float32, and the
codes, images and logits come out in float32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgeal.models import layers, stylegan2
from jaxgeal.ops import warp

Dtype = Any


def normalize(v: jax.Array) -> jax.Array:
  """upstream `util.normalize`: v / sqrt(sum over channels (the last axis) of v^2 + 1e-8)."""
  return v * jax.lax.rsqrt(jnp.sum(v * v, axis=-1, keepdims=True) + 1e-8)


def swap(x: jax.Array) -> jax.Array:
  """Exchanges neighbours in the batch (0 <-> 1, 2 <-> 3, ...), as upstream's `swap`; the batch must be even."""
  if x.shape[0] % 2:
    raise ValueError(f"swap needs an even batch, got {x.shape[0]}")
  return jnp.flip(x.reshape(x.shape[0] // 2, 2, *x.shape[1:]), axis=1).reshape(x.shape)


class Encoder(nn.Module):
  """StyleGAN2ResnetEncoder: FromRGB, `len(widths) - 1 - num_downsampling_gl` anti-aliased residual blocks with
  reflection padding to the structure code, then strided convs + mean pooling + dense to the texture code.

  widths: channel count after FromRGB and after each down-sampling, `nc(0) ... nc(sp + gl)` upstream.
  """

  widths: Sequence[int]
  num_downsampling_gl: int
  spatial_code_ch: int
  global_code_ch: int
  blur_kernel: Sequence[int] = (1, 2, 1)
  dtype: Dtype = None

  @property
  def num_downsampling_sp(self) -> int:
    return len(self.widths) - 1 - self.num_downsampling_gl

  @nn.compact
  def __call__(self, x, extract_features: bool = False):
    """(B, H, W, 3) -> structure code (B, H/2^sp, W/2^sp, spatial_code_ch), texture code (B, global_code_ch)
    [, features (B, 7, 7, nc(sp + 1)) for upstream's `extract_features`]."""
    nc, sp, dt = self.widths, self.num_downsampling_sp, self.dtype
    x = layers.ConvLayer(3, nc[0], 1, dtype=dt, name="FromRGB")(x)
    for i in range(sp):
      x = layers.ResBlock(
        nc[i], nc[i + 1], blur_kernel=self.blur_kernel, reflection_pad=True, dtype=dt, name=f"ResBlockDownBy{2**i}"
      )(x)
    midpoint = x
    s = layers.ConvLayer(nc[sp], nc[sp], 1, dtype=dt, name="ToSpatialCode_0")(midpoint)
    s = layers.ConvLayer(nc[sp], self.spatial_code_ch, 1, activate=False, dtype=dt, name="ToSpatialCode_1")(s)
    down_to_global = [
      layers.ConvLayer(
        nc[sp + i],
        nc[sp + i + 1],
        3,
        downsample=True,
        blur_kernel=(1,),
        pad=0,
        dtype=dt,
        name=f"ConvLayerDownBy{2 ** (sp + i)}",
      )
      for i in range(self.num_downsampling_gl)
    ]
    g = midpoint
    for conv in down_to_global:
      g = conv(g)
    # The mean pooling sums h x w values: float32.
    g = layers.EqualLinear(nc[-1], self.global_code_ch, dtype=dt, name="ToGlobalCode")(
      jnp.mean(layers.full_precision(g), axis=(1, 2))
    )
    s, g = normalize(layers.full_precision(s)), normalize(layers.full_precision(g))
    if not extract_features:
      return s, g
    # Upstream pads (left 1, right 0, top 1, bottom 0) so that the first global conv halves the code's size.
    padded = jnp.pad(midpoint, ((0, 0), (1, 0), (1, 0), (0, 0)), mode="reflect")
    feature = warp.resize_bilinear(layers.full_precision(down_to_global[0](padded)), out_hw=(7, 7))
    return s, g, feature


class GeneratorModulation(nn.Module):
  """x * scale(texture) + bias(texture): the structure code modulated by the texture code."""

  style_dim: int
  channels: int
  dtype: Dtype = None

  @nn.compact
  def __call__(self, x, style):
    scale = layers.EqualLinear(self.style_dim, self.channels, dtype=self.dtype, name="scale")(style)
    bias = layers.EqualLinear(self.style_dim, self.channels, dtype=self.dtype, name="bias")(style)
    return x.astype(scale.dtype) * scale[:, None, None, :] + bias[:, None, None, :]


class ResolutionPreservingResnetBlock(nn.Module):
  """Two styled 3x3 convs (always with noise, as upstream) + a 1x1 skip when the width changes, / sqrt(2)."""

  in_ch: int
  out_ch: int
  style_dim: int
  dtype: Dtype = None

  @nn.compact
  def __call__(self, x, style, noise):
    skip = x
    if self.in_ch != self.out_ch:
      skip = layers.ConvLayer(
        self.in_ch, self.out_ch, 1, use_bias=False, activate=False, dtype=self.dtype, name="skip"
      )(x)
    conv = dict(kernel_size=3, style_dim=self.style_dim, normalize_style=True, dtype=self.dtype)
    res = layers.StyledConv(self.in_ch, self.out_ch, **conv, name="conv1")(x, style, noise[0])
    res = layers.StyledConv(self.out_ch, self.out_ch, **conv, name="conv2")(res, style, noise[1])
    return (skip + res) / math.sqrt(2.0)


class UpsamplingResnetBlock(nn.Module):
  """Styled up-sampling 3x3 conv + styled 3x3 conv; skip: (1x1 conv + bias + leaky ReLU when the width changes),
  bilinearly up-sampled; summed / sqrt(2)."""

  in_ch: int
  out_ch: int
  style_dim: int
  blur_kernel: Sequence[int] = (1, 3, 3, 1)
  dtype: Dtype = None

  @nn.compact
  def __call__(self, x, style, noise):
    skip = x
    if self.in_ch != self.out_ch:
      skip = layers.ConvLayer(self.in_ch, self.out_ch, 1, dtype=self.dtype, name="skip")(x)
    skip = warp.resize_bilinear(skip, scale_factor=2)
    conv = dict(kernel_size=3, style_dim=self.style_dim, normalize_style=True, dtype=self.dtype)
    res = layers.StyledConv(self.in_ch, self.out_ch, **conv, upsample=True, blur_kernel=self.blur_kernel, name="conv1")(
      x, style, noise[0]
    )
    res = layers.StyledConv(self.out_ch, self.out_ch, **conv, name="conv2")(res, style, noise[1])
    return (skip + res) / math.sqrt(2.0)


class Generator(nn.Module):
  """StyleGAN2ResnetGenerator (fig. 18): structure code modulated by the texture code, resolution-preserving
  residual blocks (`head_widths`), one up-sampling residual block per width of `up_widths`, ToRGB.

  Noise: one (B or 1, H, W, 1) map per styled conv in `noise_layers()` order, or None to draw fresh N(0, 1) noise
  per sample from the "noise" rng. With `use_noise=False` the up-sampling blocks add none (the head blocks
  always do, as upstream).
  """

  spatial_code_ch: int
  global_code_ch: int
  head_widths: Sequence[int]
  up_widths: Sequence[int]
  blur_kernel: Sequence[int] = (1, 3, 3, 1)
  use_noise: bool = True
  dtype: Dtype = None

  def noise_layers(self) -> list[tuple[str, int]]:
    """(upstream module name, up-sampling factor relative to the structure code) of each noise input."""
    out = []
    for i in range(len(self.head_widths)):
      out += [(f"HeadResnetBlock{i}.conv{c}.noise", 1) for c in (1, 2)]
    for j in range(len(self.up_widths)):
      out += [(f"UpsamplingResBlock{2 ** (4 + j)}.conv{c}.noise", 2 ** (j + 1)) for c in (1, 2)]
    return out

  @nn.compact
  def __call__(self, structure, texture, noise: Sequence[jax.Array | None] | None = None):
    """(B, h, w, spatial_code_ch), (B, global_code_ch) -> (B, h 2^n, w 2^n, 3) with n = len(up_widths)."""
    structure, texture = normalize(structure), normalize(texture)
    b, h, w, _ = structure.shape
    if noise is None:
      keys = jax.random.split(self.make_rng("noise"), len(self.noise_layers()))
      noise = [
        jax.random.normal(k, (b, h * f, w * f, 1), structure.dtype) for k, (_, f) in zip(keys, self.noise_layers())
      ]
    noise = list(noise)
    dt = self.dtype
    x = GeneratorModulation(self.global_code_ch, self.spatial_code_ch, dtype=dt, name="SpatialCodeModulation")(
      structure, texture
    )
    in_ch = self.spatial_code_ch
    for i, out_ch in enumerate(self.head_widths):
      x = ResolutionPreservingResnetBlock(in_ch, out_ch, self.global_code_ch, dtype=dt, name=f"HeadResnetBlock{i}")(
        x, texture, noise[2 * i : 2 * i + 2]
      )
      in_ch = out_ch
    offset = 2 * len(self.head_widths)
    for j, out_ch in enumerate(self.up_widths):
      n = noise[offset + 2 * j : offset + 2 * j + 2] if self.use_noise else [None, None]
      x = UpsamplingResnetBlock(
        in_ch, out_ch, self.global_code_ch, self.blur_kernel, dtype=dt, name=f"UpsamplingResBlock{2 ** (4 + j)}"
      )(x, texture, n)
      in_ch = out_ch
    return layers.ToRGB(in_ch, self.global_code_ch, blur_kernel=self.blur_kernel, dtype=dt, name="ToRGB")(x, texture)


class PatchDiscriminator(nn.Module):
  """StyleGAN2PatchDiscriminator: a residual feature extractor for (patch_size)^2 crops and a pair MLP that
  judges whether two crop features (a reference and a query) come from the same texture (§3.2, co-occurrence).

  channels: (resolution, width) pairs for the feature extractor as upstream's table; pair_widths: the MLP's
  hidden widths (2048, 2048, 1024 upstream).
  """

  patch_size: int
  channels: Sequence[tuple[int, int]]
  max_nc: int
  pair_widths: Sequence[int] = (2048, 2048, 1024)
  blur_kernel: Sequence[int] = (1, 3, 3, 1)
  dtype: Dtype = None  # computation dtype (None: the input's); logits come out float32

  def setup(self):
    ch, dt = dict(self.channels), self.dtype
    log_size = int(math.ceil(math.log2(self.patch_size)))
    in_ch = ch[2**log_size]
    convs = [layers.ConvLayer(3, in_ch, 3, dtype=dt)]
    for i in range(log_size, 2, -1):
      convs.append(layers.ResBlock(in_ch, ch[2 ** (i - 1)], blur_kernel=self.blur_kernel, dtype=dt))
      in_ch = ch[2 ** (i - 1)]
    convs.append(layers.ResBlock(in_ch, self.max_nc * 2, downsample=False, dtype=dt))
    convs.append(layers.ConvLayer(self.max_nc * 2, self.max_nc, 3, pad=0, dtype=dt))
    self.convs = convs
    widths = [ch[4] * 2 * 2 * 2, *self.pair_widths]
    self.pairlinear = [
      layers.EqualLinear(a, b, activation="fused_lrelu", dtype=dt) for a, b in zip(widths[:-1], widths[1:])
    ] + [layers.EqualLinear(widths[-1], 1, dtype=dt)]

  def extract_features(self, patches, aggregate: bool = False):
    """(B, T, P, P, 3) crops -> (B * T, h, w, C) features; `aggregate` replaces each by the mean over its T."""
    b, t = patches.shape[:2]
    x = patches.reshape(b * t, *patches.shape[2:])
    for conv in self.convs:
      x = conv(x)
    if aggregate:
      x = x.reshape(b, t, *x.shape[1:])
      x = jnp.broadcast_to(jnp.mean(x, axis=1, keepdims=True), x.shape).reshape(b * t, *x.shape[2:])
    return layers.full_precision(x)

  def discriminate_features(self, feature1, feature2):
    """Pair MLP on concat(flatten(f1), flatten(f2)) -> (N, 1) logits; flattened in upstream's (C, H, W) order so
    that converted weights apply unchanged."""
    flat = [jnp.transpose(f, (0, 3, 1, 2)).reshape(f.shape[0], -1) for f in (feature1, feature2)]
    x = jnp.concatenate(flat, axis=1)
    for layer in self.pairlinear:
      x = layer(x)
    return layers.full_precision(x)

  def __call__(self, reference, query, aggregate: bool = True):
    return self.discriminate_features(self.extract_features(reference, aggregate), self.extract_features(query))


# -- widths from upstream's options ------------------------------------------------------------------------------


def widths_from_options(opt: Mapping) -> dict:
  """Constructor arguments of (Encoder, Generator, D, PatchDiscriminator) from upstream's option names
  (`crop_size`, `netE_*`, `netG_*`, `netD_scale_capacity`, `netPatchD_*`, `patch_size`, codes, `use_antialias`),
  as upstream's `nc`, `nf` and channel tables compute them. D's 4x4 / 8x8 width (512 upstream) and the pair MLP's
  widths may be given as `netD_max_nc` / `netPatchD_pair_widths` (narrowed test models)."""
  sp, gl = opt["netE_num_downsampling_sp"], opt["netE_num_downsampling_gl"]
  antialias = opt.get("use_antialias", True)

  def nc(idx):
    n = opt.get("netE_nc_steepness", 2.0) ** (5 + idx) * opt.get("netE_scale_capacity", 1.0)
    return round(min(opt["global_code_ch"], int(round(n))))

  def nf(num_up):
    return int(min(512, 128 * 2 ** (sp - num_up)) * opt.get("netG_scale_capacity", 1.0))

  n_head = opt.get("netG_num_base_resnet_layers", 2)
  head = [max(opt["spatial_code_ch"], round((i + 1) / n_head * nf(0))) for i in range(n_head)]
  d_mult = 2.0 * opt.get("netD_scale_capacity", 1.0)
  d_max = opt.get("netD_max_nc", 512)
  d_channels = {4: d_max, 8: d_max}
  d_channels.update({r: min(512, int(512 * d_mult)) for r in (16, 32)})
  d_channels.update({64 * 2**k: int(256 / 2**k * d_mult) for k in range(5)})
  p_mult, p_max = opt.get("netPatchD_scale_capacity", 4.0), opt.get("netPatchD_max_nc", 384)
  p_channels = {4: min(p_max, int(256 * p_mult)), 8: min(p_max, int(128 * p_mult)), 16: min(p_max, int(64 * p_mult))}
  p_channels.update({32 * 2**k: int(32 / 2**k * p_mult) for k in range(4)})
  return {
    "image_size": opt["crop_size"],
    "encoder": dict(
      widths=[nc(i) for i in range(sp + gl + 1)],
      num_downsampling_gl=gl,
      spatial_code_ch=opt["spatial_code_ch"],
      global_code_ch=opt["global_code_ch"],
      blur_kernel=[1, 2, 1] if antialias else [1],
    ),
    "generator": dict(
      spatial_code_ch=opt["spatial_code_ch"],
      global_code_ch=opt["global_code_ch"] + opt.get("num_classes", 0),
      head_widths=head,
      up_widths=[nf(j + 1) for j in range(sp)],
      blur_kernel=[1, 3, 3, 1] if antialias else [1],
      use_noise=bool(opt.get("netG_use_noise", True)),
    ),
    "discriminator": dict(
      size=opt["crop_size"],
      channels=sorted((r, c) for r, c in d_channels.items() if r <= opt["crop_size"]),
      blur_kernel=[1, 3, 3, 1] if antialias else [1],
    ),
    "patch_discriminator": dict(
      patch_size=opt["patch_size"],
      channels=sorted((r, c) for r, c in p_channels.items() if r <= 2 ** math.ceil(math.log2(opt["patch_size"]))),
      max_nc=p_max,
      pair_widths=list(opt.get("netPatchD_pair_widths", (2048, 2048, 1024))),
      blur_kernel=[1, 3, 3, 1] if antialias else [1],
    ),
  }


def _tuples(v):
  return tuple(tuple(x) if isinstance(x, (list, tuple)) else x for x in v)


# The builders take the computation dtype separately: it is a run-time choice, not part of a model's config.


def encoder_from_config(config: Mapping, dtype: Dtype = None) -> Encoder:
  c = config["encoder"]
  return Encoder(
    tuple(c["widths"]),
    c["num_downsampling_gl"],
    c["spatial_code_ch"],
    c["global_code_ch"],
    tuple(c["blur_kernel"]),
    dtype=dtype,
  )


def generator_from_config(config: Mapping, dtype: Dtype = None) -> Generator:
  c = config["generator"]
  return Generator(
    c["spatial_code_ch"],
    c["global_code_ch"],
    tuple(c["head_widths"]),
    tuple(c["up_widths"]),
    tuple(c["blur_kernel"]),
    c["use_noise"],
    dtype=dtype,
  )


def discriminator_from_config(config: Mapping, dtype: Dtype = None) -> stylegan2.Discriminator:
  """The image discriminator: rosinality's StyleGAN2 D without minibatch stddev (upstream comments it out)."""
  c = config["discriminator"]
  return stylegan2.Discriminator(
    size=c["size"], channels=_tuples(c["channels"]), blur_kernel=tuple(c["blur_kernel"]), stddev_feat=0, dtype=dtype
  )


def patch_discriminator_from_config(config: Mapping, dtype: Dtype = None) -> PatchDiscriminator:
  c = config["patch_discriminator"]
  return PatchDiscriminator(
    c["patch_size"], _tuples(c["channels"]), c["max_nc"], tuple(c["pair_widths"]), tuple(c["blur_kernel"]), dtype=dtype
  )


def init_variables(name: str, config: Mapping, key: jax.Array, size: int | None = None) -> dict:
  """Fresh variables of network `name` ("E", "G", "D" or "Dpatch") of `config`, initialised on `size` px images
  (default: the training size; the encoder and generator are fully convolutional, so any multiple of their
  down-sampling factor gives the same variables)."""
  if name == "E":
    size = size or 2 ** (len(config["encoder"]["widths"]) + 2)
    return encoder_from_config(config).init(key, jnp.zeros((1, size, size, 3)))
  if name == "G":
    c = config["generator"]
    s, t = jnp.zeros((1, 4, 4, c["spatial_code_ch"])), jnp.zeros((1, c["global_code_ch"]))
    return generator_from_config(config).init({"params": key, "noise": key}, s, t)
  if name == "D":
    size = config["discriminator"]["size"]
    return discriminator_from_config(config).init(key, jnp.zeros((1, size, size, 3)))
  if name == "Dpatch":
    p = config["patch_discriminator"]["patch_size"]
    crops = jnp.zeros((1, 1, p, p, 3))
    return patch_discriminator_from_config(config).init(key, crops, crops)
  raise ValueError(f"unknown Swapping Autoencoder network {name!r}: expected E, G, D or Dpatch")
