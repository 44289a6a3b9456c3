"""Anti-aliased (mipmap) warping and the tent-filter downsampler of GANgealing.

Implements upstream `models/spatial_transformers/antialiased_sampling.py` (`MipmapWarp`, by Tim Brooks, and
`BilinearDownsample`, by Richard Zhang) used by every STN of Peebles et al., "GAN-Supervised Dense Visual
Alignment" (CVPR 2022, App. B): a zooming-out warp would alias if it read only the 4 nearest pixels, so each
output pixel instead samples a Gaussian *stack* (blurred but not downsampled copies of the input) at a level
chosen from how far apart its neighbours' source positions are.

Differences from upstream, none of which changes a result upstream can produce:
  * Upstream builds `ceil(max level) + 1` levels, a data-dependent count read back to the host. We build a
    static `ceil(max(max_num_levels - 1, min_level)) + 1` levels so the warp jits; levels above the data's
    maximum get zero blending weight. The count is capped at the levels the input can hold (a level of one
    pixel is the last, its stride-2 reflection-padded blur is undefined); levels beyond that cap, which make
    upstream raise, are clamped to it.
  * Upstream pads to the next power of two using the width for both axes; we pad each axis on its own
    (identical for the square inputs upstream supports).

Layout: NHWC images, (B, H, W, 2) grids with align_corners=False coordinates (see `jaxgeal.ops.warp`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxgeal.ops import warp


def tent_kernel(stride: int) -> np.ndarray:
  """`BilinearDownsample`'s 1-D tent [1, 3, ..., 2s-1, 2s-1, ..., 3, 1] / sum (stride 2: [1, 3, 3, 1]/8)."""
  ramp = np.arange(1, 2 * stride + 1, 2, dtype=np.float64)
  kernel = np.concatenate([ramp, ramp[::-1]])
  return (kernel / kernel.sum()).astype(np.float32)


def _strided_filter(x: jax.Array, kernel: np.ndarray, stride: int, axis: int) -> jax.Array:
  """Valid 1-D correlation of `x` with `kernel` along `axis`, keeping every `stride`-th output."""
  n = x.shape[axis]
  taps = len(kernel)
  out_len = (n - taps) // stride + 1
  out = 0.0
  for t, k in enumerate(kernel):
    # Tap t of output j reads input j*stride + t.
    sl = jax.lax.slice_in_dim(x, t, t + stride * (out_len - 1) + 1, stride=stride, axis=axis)
    out = out + jnp.asarray(k, x.dtype) * sl
  return out


def bilinear_downsample(img: jax.Array, stride: int) -> jax.Array:
  """`BilinearDownsample(stride)`: anti-aliased downsampling of a (B, H, W, C) image by an integer stride.

  Reflection-pads by int(stride/2), then applies the separable tent filter (`tent_kernel`) with the stride,
  first along the width and then along the height, like upstream's two depthwise convolutions. A tent of
  width 2*stride is the bilinear (triangle) kernel scaled by the stride; its taps sum to 1 (DC gain 1).
  Output size: (H + 2*int(stride/2) - 2*stride) // stride + 1 (H/stride for even strides).
  """
  pad = int(stride / 2)
  x = jnp.pad(img, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
  kernel = tent_kernel(stride)
  x = _strided_filter(x, kernel, stride, axis=2)
  return _strided_filter(x, kernel, stride, axis=1)


def downsample_to(img: jax.Array, size: int) -> jax.Array:
  """(B, S, S, C) images tent-downsampled to side `size` (`bilinear_downsample` with stride S // size); unchanged
  when that stride is 1."""
  stride = img.shape[2] // size
  return bilinear_downsample(img, stride) if stride > 1 else img


def _downsample_2x(x: jax.Array) -> jax.Array:
  # Upstream's `_downsample_2x` (2-D [1,3,3,1]^2/64 blur, reflection pad 1, stride 2) is separable and equals
  # the stride-2 tent downsampler exactly.
  return bilinear_downsample(x, 2)


def num_stack_levels(max_num_levels: float, min_level: float = 0.0, size: tuple | None = None) -> int:
  """Static level count: ceil(highest reachable level) + 1, capped at what an input of `size` holds."""
  count = int(math.ceil(max(max_num_levels - 1.0, min_level))) + 1
  if size is not None:
    side = min(_next_pow2(s) for s in size)
    count = min(count, int(math.log2(side)) + 1)
  return count


def _next_pow2(n: int) -> int:
  return 1 << (int(n) - 1).bit_length()


def gaussian_stack(img: jax.Array, num_levels: int) -> jax.Array:
  """(B, H, W, C) -> (B, H, W, L, C) Gaussian stack: level i is blurred-and-halved i times, upsampled back.

  Inputs whose sides are not powers of two are first reflect-padded (total // 2 before, the rest after) to
  the next power of two so that every halving is exact, and the stack is cropped back afterwards.
  """
  _, h, w, _ = img.shape
  ph, pw = _next_pow2(h) - h, _next_pow2(w) - w
  top, left = ph // 2, pw // 2
  x = jnp.pad(img, ((0, 0), (top, ph - top), (left, pw - left), (0, 0)), mode="reflect")
  levels = [x]
  for i in range(1, num_levels):
    x = _downsample_2x(x)
    # scale_factor 2**i brings the level back exactly to the padded size.
    levels.append(warp.resize_bilinear(x, scale_factor=2.0**i))
  stack = jnp.stack(levels, axis=3)
  return stack[:, top : top + h, left : left + w]


def mipmap_levels(
  grid: jax.Array, in_hw: tuple[int, int], max_num_levels: float = 8.0, min_level: float = 0.0
) -> jax.Array:
  """Per output pixel mipmap level, (B, Ho, Wo): log2 of the source-pixel footprint of a grid step.

  Source positions use upstream's align_corners=True-style conversion (size - 1) * (g + 1) / 2 (not the
  sampling convention; this only sets the blur amount). The footprint is the largest distance to the 4
  neighbouring samples (replication padding at the border, so the border uses its inner neighbours), with
  squared distances clamped at 1 before the square root: log2(1) = 0 is level 0 anyway, and the clamp keeps
  the square root's gradient finite. level = clamp(log2(dist), 0, max_num_levels - 1), then >= min_level.
  """
  h, w = in_hw
  coords = jnp.stack([(w - 1.0) * (grid[..., 0] + 1.0) / 2.0, (h - 1.0) * (grid[..., 1] + 1.0) / 2.0], axis=-1)
  padded = jnp.pad(coords, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  neighbours = (padded[:, 1:-1, :-2], padded[:, 1:-1, 2:], padded[:, :-2, 1:-1], padded[:, 2:, 1:-1])
  dist = [jnp.sqrt(jnp.maximum(jnp.sum((n - coords) ** 2, axis=-1), 1.0)) for n in neighbours]
  levels = jnp.clip(jnp.log2(jnp.max(jnp.stack(dist), axis=0)), 0.0, max_num_levels - 1.0)
  return jnp.maximum(levels, min_level)


def sample_stack(stack: jax.Array, grid: jax.Array, levels: jax.Array, padding_mode: str = "border") -> jax.Array:
  """Samples every level of a (B, H, W, L, C) stack at `grid` and blends the two levels around `levels`.

  All levels are folded into the channel axis so that one gather serves them all. The blend
  out = out[floor] + frac * (out[ceil] - out[floor]) is written as one-hot weights over the L levels,
  which gives the same value and the same gradient with respect to `levels`.
  """
  b, h, w, num_levels, c = stack.shape
  sampled = warp.grid_sample(stack.reshape(b, h, w, num_levels * c), grid, padding_mode)
  sampled = sampled.reshape(sampled.shape[:3] + (num_levels, c))
  lo = jnp.floor(levels)
  frac = levels - lo  # Upstream's `levels % 1`; carries the gradient.
  hi = jnp.ceil(levels)
  ids = jnp.arange(num_levels, dtype=levels.dtype)
  weights = (ids == lo[..., None]) * (1.0 - frac[..., None]) + (ids == hi[..., None]) * frac[..., None]
  out = jnp.einsum("bhwl,bhwlc->bhwc", weights.astype(sampled.dtype), sampled, precision=jax.lax.Precision.HIGHEST)
  return out


def mipmap_warp(
  img: jax.Array,
  grid: jax.Array,
  padding_mode: str = "border",
  max_num_levels: float = 8.0,
  min_level: float = 0.0,
  return_levels: bool = False,
):
  """`MipmapWarp(max_num_levels)(img, grid, min_level, padding_mode)`: anti-aliased `grid_sample`.

  Args:
    img: (B, H, W, C) image.
    grid: (B, Ho, Wo, 2) sampling grid (align_corners=False normalised coordinates).
    padding_mode: 'border' (upstream's default), 'zeros' or 'reflection', passed to `grid_sample`.
    max_num_levels: upstream's constructor argument (8 by default; the STNs use 3.5, i.e. levels in
      [0, 2.5] and 4 stack levels).
    min_level: lower bound on the level (extra blur everywhere).
    return_levels: also return the (B, Ho, Wo) level map (upstream's `levels_map * (max_num_levels - 1)`).

  Returns:
    (B, Ho, Wo, C) warped image, and the level map if `return_levels`.
  """
  in_hw = img.shape[1:3]
  num_levels = num_stack_levels(max_num_levels, min_level, in_hw)
  levels = mipmap_levels(grid, in_hw, max_num_levels, min_level)
  # Only reachable where upstream raises (see the module docstring); a no-op otherwise.
  levels = jnp.minimum(levels, num_levels - 1.0)
  out = sample_stack(gaussian_stack(img, num_levels), grid, levels, padding_mode)
  return (out, levels) if return_levels else out
