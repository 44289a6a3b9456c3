"""StyleGAN2 building blocks in Flax Linen (Karras et al. 2020, §2 and appendix B; rosinality layout).

Equalised learning rate (ProGAN §4.1): weights are stored as N(0, 1) / lr_mul and scaled at run time by
lr_mul / sqrt(fan_in), so Adam sees every layer at the same scale. Attribute names follow rosinality's
modules (`conv`, `modulation`, `noise`, `activate`, `weight`, `bias`, ...) so that checkpoints convert by
renaming; layouts are NHWC activations, HWIO conv weights and (in, out) dense weights.

The STN trunks of GANgealing (§3.2) reuse ConvLayer / ResBlock / EqualLinear from here.

Mixed precision (flax's convention): `dtype` is the computation dtype of a layer's matmul / convolution, None
following the input's dtype; parameters stay float32 and are cast at the operation. `full_precision` casts a
network's output back to (at least) float32 where losses start.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgeal.ops import conv as conv_ops
from jaxgeal.ops import modulated_conv as mc
from jaxgeal.ops import upfirdn2d as fir
from jaxgeal.ops.bias_act import fused_leaky_relu

Array = Any
Dtype = Any


def compute_dtype(x: Array, dtype: Dtype) -> Any:
  """The dtype a layer computes in: `dtype`, or x's dtype when None (flax's convention)."""
  return x.dtype if dtype is None else dtype


def full_precision(x: Array) -> Array:
  """x in float32 (or wider, e.g. float64 under x64): outputs of bfloat16 networks, statistics, losses."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


class EqualLinear(nn.Module):
  """Dense layer with equalised learning rate; optional fused bias + leaky ReLU ("fused_lrelu")."""

  in_dim: int
  out_dim: int
  bias_init: float = 0.0
  lr_mul: float = 1.0
  activation: str | None = None  # None or "fused_lrelu"
  use_bias: bool = True
  dtype: Dtype = None  # computation dtype (None: the input's); params stay float32

  @nn.compact
  def __call__(self, x):
    weight = self.param("weight", lambda k: jax.random.normal(k, (self.in_dim, self.out_dim)) / self.lr_mul)
    scale = self.lr_mul / math.sqrt(self.in_dim)
    x = x.astype(compute_dtype(x, self.dtype))
    y = x @ (weight * scale).astype(x.dtype)
    bias = None
    if self.use_bias:
      bias = self.param("bias", lambda k: jnp.full((self.out_dim,), self.bias_init, jnp.float32))
      bias = bias * self.lr_mul
    if self.activation == "fused_lrelu":
      return fused_leaky_relu(y, bias)
    if self.activation is not None:
      raise ValueError(f"EqualLinear: unknown activation {self.activation!r}")
    return y if bias is None else y + bias.astype(y.dtype)


class EqualConv2d(nn.Module):
  """Conv2d with equalised learning rate; weight (k, k, in, out); explicit symmetric padding."""

  in_ch: int
  out_ch: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  use_bias: bool = True
  dtype: Dtype = None

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    weight = self.param("weight", lambda r: jax.random.normal(r, (k, k, self.in_ch, self.out_ch)))
    scale = 1.0 / math.sqrt(self.in_ch * k * k)
    x = x.astype(compute_dtype(x, self.dtype))
    y = conv_ops.conv2d(x, (weight * scale).astype(x.dtype), self.stride, self.padding)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.out_ch,)).astype(y.dtype)
    return y


class FusedLeakyReLU(nn.Module):
  """Learned bias followed by leaky ReLU(0.2) * sqrt(2)."""

  channels: int

  @nn.compact
  def __call__(self, x):
    return fused_leaky_relu(x, self.param("bias", nn.initializers.zeros, (self.channels,)))


def reflection_pad(x, pad: tuple[int, int]):
  """torch `ReflectionPad2d((pad0, pad1, pad0, pad1))` of NHWC x (the edge pixel is not repeated)."""
  return jnp.pad(x, ((0, 0), pad, pad, (0, 0)), mode="reflect")


class ConvLayer(nn.Module):
  """rosinality ConvLayer: [blur + stride-2] EqualConv2d, then FusedLeakyReLU (or a plain bias).

  Submodules: `conv` (EqualConv2d, carries the bias only when not activated) and `activate`. The Swapping
  Autoencoder's copy adds `pad` (explicit padding, or the blur's padding when downsampling) and `reflection_pad`
  (reflect instead of zero-pad the conv or, when downsampling, the blur).
  """

  in_ch: int
  out_ch: int
  kernel_size: int
  downsample: bool = False
  blur_kernel: Sequence[int] = (1, 3, 3, 1)
  use_bias: bool = True
  activate: bool = True
  pad: int | None = None
  reflection_pad: bool = False
  dtype: Dtype = None

  @nn.compact
  def __call__(self, x):
    x = x.astype(compute_dtype(x, self.dtype))  # the blur / padding ahead of the conv run in it too
    if self.downsample:
      if self.pad is None and not self.reflection_pad:
        x = fir.blur_before_downsampling_conv(x, self.blur_kernel, self.kernel_size)
      else:
        p = (len(self.blur_kernel) - 2) + (self.kernel_size - 1) if self.pad is None else self.pad
        blur_pad = ((p + 1) // 2, p // 2)
        if self.reflection_pad:
          x, blur_pad = reflection_pad(x, blur_pad), (0, 0)
        x = fir.blur(x, fir.make_kernel(self.blur_kernel), pad=blur_pad)
      stride, padding = 2, 0
    else:
      stride, padding = 1, self.kernel_size // 2 if self.pad is None else self.pad
      if self.reflection_pad:
        x, padding = reflection_pad(x, (padding, padding)), 0
    x = EqualConv2d(
      self.in_ch,
      self.out_ch,
      self.kernel_size,
      stride,
      padding,
      use_bias=self.use_bias and not self.activate,
      dtype=self.dtype,
      name="conv",
    )(x)
    if self.activate:
      x = FusedLeakyReLU(self.out_ch, name="activate")(x) if self.use_bias else fused_leaky_relu(x)
    return x


class ResBlock(nn.Module):
  """Discriminator residual block: (conv1 3x3, conv2 3x3 [down]) + skip 1x1 [down], summed / sqrt(2).

  `reflection_pad` (Swapping Autoencoder encoder) reflects the padding of conv1 and conv2, not of the skip.
  """

  in_ch: int
  out_ch: int
  downsample: bool = True
  blur_kernel: Sequence[int] = (1, 3, 3, 1)
  reflection_pad: bool = False
  dtype: Dtype = None

  @nn.compact
  def __call__(self, x):
    refl, dt = self.reflection_pad, self.dtype
    out = ConvLayer(
      self.in_ch, self.in_ch, 3, blur_kernel=self.blur_kernel, reflection_pad=refl, dtype=dt, name="conv1"
    )(x)
    out = ConvLayer(
      self.in_ch, self.out_ch, 3, self.downsample, self.blur_kernel, reflection_pad=refl, dtype=dt, name="conv2"
    )(out)
    skip = ConvLayer(
      self.in_ch,
      self.out_ch,
      1,
      downsample=self.downsample,
      blur_kernel=self.blur_kernel,
      use_bias=False,
      activate=False,
      dtype=dt,
      name="skip",
    )(x)
    return (out + skip) / math.sqrt(2.0)


class ModulatedConv2d(nn.Module):
  """Modulated conv (StyleGAN2 §2.2) with its style affine `modulation` (EqualLinear, bias init 1)."""

  in_ch: int
  out_ch: int
  kernel_size: int
  style_dim: int
  demodulate: bool = True
  upsample: bool = False
  downsample: bool = False
  blur_kernel: Sequence[int] = (1, 3, 3, 1)
  impl: str = mc.DEFAULT_IMPL
  normalize_style: bool = False  # the Swapping Autoencoder's demodulation (ops/modulated_conv.py)
  dtype: Dtype = None  # of the convolution; the style affine and the demodulation stay in float32

  @nn.compact
  def __call__(self, x, style):
    k = self.kernel_size
    weight = self.param("weight", lambda r: jax.random.normal(r, (k, k, self.in_ch, self.out_ch)))
    # The style affine is a (B, style_dim) x (style_dim, Cin) product: negligible cost, and its output scales
    # every weight of the conv, so it is not worth rounding.
    s = EqualLinear(self.style_dim, self.in_ch, bias_init=1.0, name="modulation")(style)
    scale = 1.0 / math.sqrt(self.in_ch * k * k)
    return mc.modulated_conv2d(
      x.astype(compute_dtype(x, self.dtype)),
      weight * scale,
      s,
      demodulate=self.demodulate,
      up=self.upsample,
      down=self.downsample,
      blur_kernel=self.blur_kernel,
      impl=self.impl,
      normalize_style=self.normalize_style,
    )


class NoiseInjection(nn.Module):
  """out = x + weight * noise, with a learned scalar weight (initialised to 0) and (B or 1, H, W, 1) noise;
  noise None leaves x unchanged (the weight still exists, as upstream's `use_noise=False`)."""

  @nn.compact
  def __call__(self, x, noise):
    weight = self.param("weight", nn.initializers.zeros, (1,))
    if noise is None:
      return x
    return x + weight.astype(x.dtype) * noise.astype(x.dtype)


class StyledConv(nn.Module):
  """Modulated conv -> noise -> bias + leaky ReLU (noise is added before the bias, as upstream)."""

  in_ch: int
  out_ch: int
  kernel_size: int
  style_dim: int
  upsample: bool = False
  blur_kernel: Sequence[int] = (1, 3, 3, 1)
  demodulate: bool = True
  impl: str = mc.DEFAULT_IMPL
  normalize_style: bool = False
  dtype: Dtype = None

  @nn.compact
  def __call__(self, x, style, noise):
    x = ModulatedConv2d(
      self.in_ch,
      self.out_ch,
      self.kernel_size,
      self.style_dim,
      self.demodulate,
      upsample=self.upsample,
      blur_kernel=self.blur_kernel,
      impl=self.impl,
      normalize_style=self.normalize_style,
      dtype=self.dtype,
      name="conv",
    )(x, style)
    x = NoiseInjection(name="noise")(x, noise)
    return FusedLeakyReLU(self.out_ch, name="activate")(x)


class ToRGB(nn.Module):
  """1x1 modulated conv to RGB without demodulation, plus the upsampled skip from the previous resolution."""

  in_ch: int
  style_dim: int
  upsample: bool = True
  blur_kernel: Sequence[int] = (1, 3, 3, 1)
  impl: str = mc.DEFAULT_IMPL
  dtype: Dtype = None

  @nn.compact
  def __call__(self, x, style, skip=None):
    out = ModulatedConv2d(
      self.in_ch, 3, 1, self.style_dim, demodulate=False, impl=self.impl, dtype=self.dtype, name="conv"
    )(x, style)
    # The RGB image accumulates over resolutions in float32 (as StyleGAN2-ADA's mixed precision does).
    out = full_precision(out)
    out = out + self.param("bias", nn.initializers.zeros, (3,)).astype(out.dtype)
    if skip is not None:
      out = out + fir.upsample2d(skip, fir.make_kernel(self.blur_kernel), factor=2)
    return out
