"""The regression networks of GANgealing's spatial transformers (Peebles et al., CVPR 2022, §3.1, appendix B.1).

The trunk is the StyleGAN2 residual discriminator without normalisation (`make_trunk`; upstream's
`SpatialTransformer.__init__` in `models/spatial_transformers/spatial_transformer.py`, wpeebles/gangealing at
ffa6387); the heads turn its features into warps as upstream's `models/spatial_transformers/warping_heads.py`:
`SimilarityHead` (eqs. 7-11, zero-initialised = identity) and `FlowHead` (coarse flow + RAFT convex upsampling,
last conv zero-initialised, B.5). `jaxgeal.models.stn` composes them into transformers. NHWC.

Mixed precision: `dtype` (None: the input's) is the trunk's and the flow head's convolution dtype; the
similarity head, the flow / convex-upsampling weights handed to the warp (softmax, grid coordinates) and
everything after them are float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgeal.models import layers
from jaxgeal.ops import mipmap, warp

Array = Any
HIGHEST = jax.lax.Precision.HIGHEST


def default_channels(channel_multiplier: float = 0.5, max_channels: int = 512) -> tuple[tuple[int, int], ...]:
  """Upstream's STN channel table {4..32: 512, 64: 256 cm, 128: 128 cm, ...} as (resolution, width) pairs."""
  table = {4: max_channels, 8: max_channels, 16: max_channels, 32: max_channels}
  table.update({64 * 2**i: int(256 * channel_multiplier / 2**i) for i in range(5)})
  return tuple(table.items())


def _log2(n: int, what: str) -> int:
  log = int(round(math.log2(n)))
  if 2**log != n:
    raise ValueError(f"{what} must be a power of two, got {n}")
  return log


def make_trunk(
  channels: Sequence[tuple[int, int]],
  size: int,
  regress_flow: bool = False,
  flow_downsample: int = 8,
  blur_kernel: Sequence[int] = (1, 3, 3, 1),
  dtype: Any = None,
):
  """The ResNet trunk (B.1) as (convs, final_conv) modules, to be assigned in a parent's setup().

  convs[0] is a 1x1 ConvLayer from RGB; then one ResBlock per halving down to 4x4 (similarity STN, cluster
  classifier), or, for the flow STN, four ResBlocks of which only the first log2(flow_downsample) downsample,
  leaving features at size / flow_downsample (upstream reads the width of block i at channels[2**(i-1)]).
  """
  table = dict(channels)
  log_size = _log2(size, "flow_size")
  end_log = log_size - 4 if regress_flow else 2
  if end_log < 0:
    raise ValueError(
      f"flow_size {size} is too small for a flow STN (at least 16; upstream needs >= 64 with its default channel table)"
    )
  log_down = _log2(flow_downsample, "flow_downsample")
  try:
    in_ch = table[size]
    convs = [layers.ConvLayer(3, in_ch, 1, blur_kernel=blur_kernel, dtype=dtype)]
    for j, i in enumerate(range(log_size, end_log, -1)):
      downsample = (not regress_flow) or j < log_down
      out_ch = table[2 ** (i - 1)]
      convs.append(layers.ResBlock(in_ch, out_ch, downsample=downsample, blur_kernel=blur_kernel, dtype=dtype))
      in_ch = out_ch
    final_conv = layers.ConvLayer(in_ch, table[4], 3, blur_kernel=blur_kernel, dtype=dtype)
  except KeyError as e:
    raise ValueError(f"no channel width for resolution {e.args[0]} in channels={table}") from None
  return convs, final_conv


def downsample_input(x: Array, flow_size: int, supersize: int | None) -> Array:
  """Upstream's `input_downsample`: the regression input at flow_size (tent filter, stride supersize/flow_size)."""
  if x.shape[2] <= flow_size:
    return x
  stride = (supersize or x.shape[2]) // flow_size
  x = mipmap.bilinear_downsample(x, stride)
  if x.shape[1:3] != (flow_size, flow_size):
    raise ValueError(
      f"input of width {x.shape[2] * stride} downsampled by supersize/flow_size = {stride} gives "
      f"{x.shape[1:3]}, not flow_size {flow_size}; build the STN with supersize = input size"
    )
  return x


class _ZeroEqualConv2d(nn.Module):
  """`layers.EqualConv2d` (same params and run-time scale) initialised to zero: the identity flow (B.5)."""

  in_ch: int
  out_ch: int
  kernel_size: int = 3
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    weight = self.param("weight", nn.initializers.zeros, (k, k, self.in_ch, self.out_ch))
    scale = 1.0 / math.sqrt(self.in_ch * k * k)
    x = x.astype(layers.compute_dtype(x, self.dtype))
    y = jax.lax.conv_general_dilated(
      x, (weight * scale).astype(x.dtype), (1, 1), [(k // 2, k // 2)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + self.param("bias", nn.initializers.zeros, (self.out_ch,)).astype(y.dtype)


class SimilarityHead(nn.Module):
  """Regresses K similarity matrices (eqs. 7-11) from (N, D) features; `linear` starts at zero = identity."""

  num_heads: int = 1

  @nn.compact
  def __call__(self, features, heads=None):
    """(N, S, 2, 3) matrices: all K heads (S = K) or the selected head per image (heads (N,), S = 1)."""
    k = self.num_heads
    features = layers.full_precision(features)  # a 4K-output regression: float32, at HIGHEST precision
    zeros = nn.initializers.zeros
    params = nn.Dense(4 * k, kernel_init=zeros, bias_init=zeros, precision=HIGHEST, name="linear")(features)
    params = params.reshape(-1, 4, k)  # Output p*K + k: parameter p of head k (upstream's split order).
    if heads is not None:
      params = jnp.take_along_axis(params, heads[:, None, None], axis=2)
    rot, scale, tx, ty = (params[:, i] for i in range(4))  # Each (N, S).
    return warp.make_affine_matrix(rot, scale, tx, ty)


class FlowHead(nn.Module):
  """Coarse flow + RAFT convex upsampling (B.1): two 3x3 conv pairs on the (N, fs/8, fs/8, C) features."""

  channels: int
  num_heads: int = 1
  flow_downsample: int = 8
  dtype: Any = None

  @nn.compact
  def __call__(self, features, heads=None):
    """(N*S, fs, fs, 2) residual flow; S = K (cartesian, image-major) or 1 (heads (N,) selects one)."""
    k, f, c, dt = self.num_heads, self.flow_downsample, self.channels, self.dtype
    flow = layers.EqualConv2d(c, c, 3, padding=1, dtype=dt, name="flow_out_0")(features)
    flow = _ZeroEqualConv2d(c, 2 * k, dtype=dt, name="flow_out_2")(jax.nn.relu(flow))
    mask = layers.EqualConv2d(c, c, 3, padding=1, dtype=dt, name="mask_out_0")(features)
    mask = layers.EqualConv2d(c, 9 * f * f * k, 3, padding=1, dtype=dt, name="mask_out_2")(jax.nn.relu(mask))
    # Flow (grid offsets) and the convex-upsampling logits (a softmax) in float32 from here on.
    flow, mask = layers.full_precision(flow), layers.full_precision(mask)
    n, h, w, _ = flow.shape
    flow = flow.reshape(n, h, w, k, 2)  # Channel k*2 + xy.
    mask = mask.reshape(n, h, w, k, 9 * f * f)  # Channel k*9f² + (neighbour, sub-pixel), convex_upsample's order.
    if heads is None:
      flow = flow.transpose(0, 3, 1, 2, 4).reshape(n * k, h, w, 2)
      mask = mask.transpose(0, 3, 1, 2, 4).reshape(n * k, h, w, 9 * f * f)
    else:
      flow = jnp.take_along_axis(flow, heads[:, None, None, None, None], axis=3)[:, :, :, 0]
      mask = jnp.take_along_axis(mask, heads[:, None, None, None, None], axis=3)[:, :, :, 0]
    return warp.convex_upsample(flow, mask, f)
