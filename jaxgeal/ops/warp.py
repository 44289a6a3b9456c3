"""Sampling grids, bilinear grid sampling and flow utilities of GANgealing's STNs.

Implements the warping primitives of Peebles et al., "GAN-Supervised Dense Visual Alignment" (CVPR 2022),
Sec. 4 / App. B (the similarity and flow spatial transformers), i.e. what upstream
`models/spatial_transformers/warping_heads.py` and `antialiased_sampling.Warp` compute with
`torch.nn.functional.{grid_sample, affine_grid, interpolate}`:

  * `grid_sample`: bilinear sampling with PyTorch's `align_corners=False` convention and its three padding
    modes (zeros / border / reflection about the outer pixel edges).
  * `affine_grid`, `make_affine_matrix`, `make_3x3`, `apply_affine`, `identity_grid`, `identity_flow`.
  * `resize_bilinear` / `resize_grid`: `F.interpolate(mode='bilinear', align_corners=False)`, including the
    `scale_factor` variant upstream uses to bring a flow to `output_resolution` (Sec. B: resizing the grid
    instead of the pixels gives a sharper output).
  * `compose`: sample one grid with another.
  * `convex_upsample`: RAFT's convex upsampling of the low-resolution flow (`FlowHead.upsample_flow`).
  * `warp_exceeds_image_bounds`: upstream's `check_if_warp_exceeds_image_boundaries`.

Layout conventions (the whole package): images are NHWC `(B, H, W, C)`; grids and flows are `(B, H, W, 2)`
with the last axis `(x, y)` in normalised coordinates where pixel `i` of an axis of size `n` sits at
`(2i + 1)/n - 1` (align_corners=False), so -1 and +1 are the outer pixel *edges*. Everything is pure JAX,
has static shapes, jits and is differentiable with respect to images and grids.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

PADDING_MODES = ("zeros", "border", "reflection")
HW = int | Sequence[int]


def _hw(size: HW) -> tuple[int, int]:
  if isinstance(size, (int, np.integer)):
    return int(size), int(size)
  h, w = size
  return int(h), int(w)


# ---------------------------------------------------------------------------------------------------------
# Bilinear grid sampling.
# ---------------------------------------------------------------------------------------------------------


def _reflect(x: jax.Array, size: int) -> jax.Array:
  """Reflects pixel coordinates about the outer pixel edges -0.5 and size - 0.5 (PyTorch's rule).

  The reflection has period 2*size: fold |x + 0.5| into [0, size), mirroring every other period.
  """
  x = jnp.abs(x + 0.5)
  flips = jnp.floor(x / size)
  extra = x - flips * size  # == fmod(x, size) for x >= 0, with gradient 1.
  odd = jnp.mod(flips, 2.0) == 1.0
  return jnp.where(odd, size - extra, extra) - 0.5


def _source_coordinate(coord: jax.Array, size: int, padding_mode: str) -> jax.Array:
  """Normalised coordinate -> continuous pixel index along one axis, after border/reflection padding."""
  # align_corners=False: -1 is the left edge of pixel 0, i.e. index -0.5. (PyTorch's CPU kernel evaluates
  # this with a fused multiply-add; the unfused float32 rounding differs by ~1e-6 px, ~1e-6 in the output.)
  x = (coord + 1.0) * (size / 2.0) - 0.5
  if padding_mode == "border":
    x = jnp.clip(x, 0.0, size - 1.0)
  elif padding_mode == "reflection":
    # After reflecting, values in (-0.5, 0) and (size-1, size-0.5) still fall between the edge pixel centre
    # and the edge; PyTorch clamps them onto the edge pixel, as for border padding.
    x = jnp.clip(_reflect(x, size), 0.0, size - 1.0)
  elif padding_mode == "zeros":
    # Beyond one pixel outside, both taps are outside anyway; the clip only keeps the int32 cast of far-away
    # samples from overflowing and changes neither values nor gradients.
    x = jnp.clip(x, -2.0, size + 1.0)
  else:
    raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
  return x


def _axis_taps(x: jax.Array, size: int):
  """The two integer taps around continuous indices `x`, their bilinear weights and in-bounds masks."""
  x0 = jnp.floor(x)
  w1 = x - x0  # Carries the gradient with respect to the grid.
  w0 = 1.0 - w1
  x0 = x0.astype(jnp.int32)
  x1 = x0 + 1
  v0 = (x0 >= 0) & (x0 < size)
  v1 = (x1 >= 0) & (x1 < size)
  return (x0, x1), (w0, w1), (v0, v1)


def grid_sample(img: jax.Array, grid: jax.Array, padding_mode: str = "zeros") -> jax.Array:
  """Bilinear `F.grid_sample(img, grid, padding_mode, align_corners=False)` for NHWC images.

  Args:
    img: (B, H, W, C) image.
    grid: (B, Ho, Wo, 2) sampling positions, last axis (x, y), normalised to [-1, 1] (align_corners=False).
    padding_mode: 'zeros' (taps outside the image contribute 0), 'border' (coordinates are clamped to the
      edge pixel centres) or 'reflection' (coordinates are reflected about the outer pixel edges, then
      clamped).

  Returns:
    (B, Ho, Wo, C) samples, in the dtype of `img`.
  """
  b, h, w, c = img.shape
  if grid.ndim != 4 or grid.shape[0] != b or grid.shape[-1] != 2:
    raise ValueError(f"grid must be (B={b}, Ho, Wo, 2), got {grid.shape}")
  dtype = jnp.result_type(img.dtype, grid.dtype)
  grid = grid.astype(dtype)
  x = _source_coordinate(grid[..., 0], w, padding_mode)
  y = _source_coordinate(grid[..., 1], h, padding_mode)
  (x0, x1), (wx0, wx1), (vx0, vx1) = _axis_taps(x, w)
  (y0, y1), (wy0, wy1), (vy0, vy1) = _axis_taps(y, h)

  # The four corners (nw, ne, sw, se) gathered at once: flat indices (B, Ho, Wo, 4). Out-of-bounds taps
  # (possible only with zeros padding, or with zero weight at the far edge otherwise) get weight 0 and a
  # clamped index, so the gather never reads outside the image.
  xs = jnp.stack([x0, x1, x0, x1], axis=-1)
  ys = jnp.stack([y0, y0, y1, y1], axis=-1)
  valid = jnp.stack([vy0 & vx0, vy0 & vx1, vy1 & vx0, vy1 & vx1], axis=-1)
  weights = jnp.stack([wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1], axis=-1)
  weights = jnp.where(valid, weights, 0.0)
  flat = jnp.clip(ys, 0, h - 1) * w + jnp.clip(xs, 0, w - 1)

  # One gather of whole C-vectors per corner: (B, Ho, Wo, 4, C); the weighted corner sum contracts it.
  corners = jax.vmap(lambda im, idx: im[idx])(img.reshape(b, h * w, c).astype(dtype), flat)
  out = jnp.einsum("bhwk,bhwkc->bhwc", weights, corners, precision=jax.lax.Precision.HIGHEST)
  return out.astype(img.dtype)


# ---------------------------------------------------------------------------------------------------------
# Grids and affine warps.
# ---------------------------------------------------------------------------------------------------------


def _pixel_centres(n: int, dtype) -> jax.Array:
  """Normalised coordinates (2i + 1)/n - 1 of the n pixel centres of an axis (align_corners=False)."""
  return (2.0 * jnp.arange(n, dtype=dtype) + 1.0) / n - 1.0


def identity_grid(size: HW, batch: int = 1, dtype=jnp.float32) -> jax.Array:
  """(batch, H, W, 2) identity sampling grid: pixel centres, = F.affine_grid(eye(2, 3), ...)."""
  h, w = _hw(size)
  gy, gx = jnp.meshgrid(_pixel_centres(h, dtype), _pixel_centres(w, dtype), indexing="ij")
  return jnp.broadcast_to(jnp.stack([gx, gy], axis=-1), (batch, h, w, 2))


def identity_flow(low_res_size: HW, flow_downsample: int = 8, dtype=jnp.float32) -> jax.Array:
  """`FlowHead.identity_flow`: (1, f*h, f*w, 2) identity grid at the convex-upsampled resolution."""
  h, w = _hw(low_res_size)
  return identity_grid((flow_downsample * h, flow_downsample * w), 1, dtype)


def affine_grid(theta: jax.Array, out_hw: HW) -> jax.Array:
  """`F.affine_grid(theta, (B, C, H, W), align_corners=False)`: (B, H, W, 2) = theta @ [x, y, 1]."""
  base = identity_grid(out_hw, 1, theta.dtype)[0]
  return apply_affine(theta, jnp.broadcast_to(base, (theta.shape[0],) + base.shape))


def apply_affine(matrix: jax.Array, grid: jax.Array) -> jax.Array:
  """Upstream's `apply_affine`: maps every grid point through a (B, 2, 3) matrix, [g, 1] @ Mᵀ.

  Used to compose the similarity warp with the (identity + residual) flow grid of the flow STN.
  """
  linear = jnp.einsum("bij,bhwj->bhwi", matrix[:, :, :2], grid, precision=jax.lax.Precision.HIGHEST)
  return linear + matrix[:, None, None, :, 2]


def make_affine_matrix(rot: jax.Array, scale: jax.Array, shift_x: jax.Array, shift_y: jax.Array) -> jax.Array:
  """`SimilarityHead.make_affine_matrix`: raw regressed parameters (each (N, K)) -> (N, K, 2, 3).

  The rotation is squashed to (-pi, pi) with tanh and the scale is log-parameterised, so zeros give the
  identity: [[s cos r, -s sin r, tx], [s sin r, s cos r, ty]] with r = pi tanh(rot), s = exp(scale).
  """
  r = jnp.tanh(rot) * math.pi
  s = jnp.exp(scale)
  cos, sin = jnp.cos(r), jnp.sin(r)
  rows = [jnp.stack([s * cos, -s * sin, shift_x], axis=-1), jnp.stack([s * sin, s * cos, shift_y], axis=-1)]
  return jnp.stack(rows, axis=-2)


def make_3x3(matrix: jax.Array) -> jax.Array:
  """(..., 2, 3) affine matrix -> (..., 3, 3) homogeneous matrix (bottom row [0, 0, 1])."""
  bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 1.0], matrix.dtype), matrix.shape[:-2] + (1, 3))
  return jnp.concatenate([matrix, bottom], axis=-2)


# ---------------------------------------------------------------------------------------------------------
# Resizing and composition.
# ---------------------------------------------------------------------------------------------------------


def _linear_taps(in_size: int, out_size: int, scale_factor: float | None):
  """Static taps and weights of `F.interpolate(bilinear, align_corners=False)` along one axis.

  PyTorch maps output index d to source index (d + 0.5) * r - 0.5 with r = 1/scale_factor when a scale
  factor is given (not in/out), clamps negatives to 0 and repeats the last pixel at the far edge. The
  arithmetic is done in float32 as PyTorch does for float32 inputs.
  """
  r = np.float32(1.0 / scale_factor) if scale_factor else np.float32(in_size) / np.float32(out_size)
  src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * r - np.float32(0.5)
  src = np.maximum(src, np.float32(0.0))
  i0 = np.minimum(np.floor(src).astype(np.int32), in_size - 1)
  i1 = np.minimum(i0 + 1, in_size - 1)
  w1 = (src - i0).astype(np.float32)
  return i0, i1, np.float32(1.0) - w1, w1


def _upsample_pow2_axis(x: jax.Array, axis: int, factor: int) -> jax.Array:
  """Exact fast path of `_resize_axis` for an integer power-of-two upsampling factor f.

  Output d = f*j + r reads source j + o_r with the fixed offset o_r = (r + 0.5)/f - 0.5 in (-1/2, 1/2): a
  blend of x[j-1], x[j], x[j+1] with weights that are periodic in d. So the output is three repeated
  (edge-padded, which reproduces PyTorch's clamping) copies of x times periodic weights. The weights are
  dyadic and equal PyTorch's bit for bit; repeats avoid a gather whose gradient would be a scatter.
  """
  n = x.shape[axis]
  pad = [(0, 0)] * x.ndim
  pad[axis] = (1, 1)
  xp = jnp.pad(x, pad, mode="edge")  # xp[j + 1] = x[j].
  off = (np.arange(factor) + 0.5) / factor - 0.5
  taps = (np.maximum(-off, 0.0), 1.0 - np.abs(off), np.maximum(off, 0.0))  # On x[j-1], x[j], x[j+1].
  shape = [1] * x.ndim
  shape[axis] = n * factor
  out = 0.0
  for start, w in enumerate(taps):
    shifted = jnp.repeat(jax.lax.slice_in_dim(xp, start, start + n, axis=axis), factor, axis=axis)
    out = out + shifted * jnp.asarray(np.tile(w, n).reshape(shape), x.dtype)
  return out


def _resize_axis(x: jax.Array, axis: int, out_size: int, scale_factor: float | None) -> jax.Array:
  factor = out_size // x.shape[axis]
  if (
    factor >= 2
    and out_size == factor * x.shape[axis]
    and factor & (factor - 1) == 0
    and scale_factor in (None, float(factor))
  ):
    return _upsample_pow2_axis(x, axis, factor)
  i0, i1, w0, w1 = _linear_taps(x.shape[axis], out_size, scale_factor)
  shape = [1] * x.ndim
  shape[axis] = out_size
  w0 = jnp.asarray(w0, x.dtype).reshape(shape)
  w1 = jnp.asarray(w1, x.dtype).reshape(shape)
  return jnp.take(x, i0, axis=axis) * w0 + jnp.take(x, i1, axis=axis) * w1


def resize_bilinear(
  x: jax.Array, out_hw: HW | None = None, scale_factor: float | Sequence[float] | None = None
) -> jax.Array:
  """`F.interpolate(mode='bilinear', align_corners=False)` (no antialiasing) of a (B, H, W, C) array.

  Give either `out_hw` (source positions scale by in/out) or `scale_factor` (output size
  floor(in * s); source positions scale by 1/s exactly as PyTorch does without recompute_scale_factor).
  """
  _, h, w, _ = x.shape
  if (out_hw is None) == (scale_factor is None):
    raise ValueError("give exactly one of out_hw and scale_factor")
  if scale_factor is not None:
    sy, sx = (scale_factor, scale_factor) if np.isscalar(scale_factor) else scale_factor
    out_hw = (int(math.floor(h * float(sy))), int(math.floor(w * float(sx))))
  else:
    sy = sx = None
  ho, wo = _hw(out_hw)
  x = _resize_axis(x, 1, ho, sy)
  return _resize_axis(x, 2, wo, sx)


def resize_grid(grid: jax.Array, out_hw: HW | None = None, scale_factor: float | None = None) -> jax.Array:
  """Bilinearly resizes a (B, H, W, 2) sampling grid (upstream's path to `output_resolution`).

  Upstream calls `F.interpolate(grid, scale_factor=output_resolution / flow_size, mode='bilinear')`:
  pass `scale_factor` for that exact arithmetic. Interpolating the grid, not the warped pixels, keeps the
  output sharp; the grid values themselves are not rescaled since they are resolution independent.
  """
  return resize_bilinear(grid, out_hw=out_hw, scale_factor=scale_factor)


def compose(grid_outer: jax.Array, grid_inner: jax.Array) -> jax.Array:
  """The grid of `outer ∘ inner`: grid_sample(img, compose(o, i)) ≈ grid_sample(grid_sample(img, o), i).

  Args:
    grid_outer: (B, H, W, 2) grid applied to the image first (its value at p says where output pixel p of
      the first warp reads from).
    grid_inner: (B, Ho, Wo, 2) grid that samples the result of the first warp.

  Returns:
    (B, Ho, Wo, 2): grid_outer evaluated (bilinearly) at the positions grid_inner.

  Padding: we sample the *displacement* `grid_outer - identity` with border padding and add the sampling
  position back. Zeros padding would send extrapolated samples to the image centre and reflection would
  fold the warp back on itself; border padding of the raw grid would clamp positions between the last
  pixel centre and the edge. Border-padding the displacement extends the warp by a constant displacement
  instead, is exact for translations, and makes the identity grid a neutral element on both sides.
  """
  ident = identity_grid(grid_outer.shape[1:3], grid_outer.shape[0], grid_outer.dtype)
  return grid_inner + grid_sample(grid_outer - ident, grid_inner, padding_mode="border")


# ---------------------------------------------------------------------------------------------------------
# Convex upsampling (RAFT) and the out-of-bounds check.
# ---------------------------------------------------------------------------------------------------------


def convex_upsample(flow: jax.Array, mask: jax.Array, factor: int = 8) -> jax.Array:
  """RAFT convex upsampling, upstream `FlowHead.upsample_flow` (Teed & Deng 2020, Sec. 3.3).

  Every high-resolution flow vector is a convex combination (softmax of `mask` over the 9 neighbours) of
  the 3x3 neighbourhood of its coarse cell in `factor * flow`, with zeros outside the coarse grid.
  Upstream multiplies the normalised-coordinate flow by the factor too (a quirk that is part of the
  model: the learned flow head absorbs it).

  Args:
    flow: (B, h, w, 2) low-resolution flow.
    mask: (B, h, w, 9 * f * f) logits. Channel `c = k*f*f + i*f + j` weighs neighbour `k = 3*(dy + 1) +
      (dx + 1)` (dy, dx in {-1, 0, 1}, F.unfold order) for output sub-pixel (i, j), i.e. output row
      `y*f + i`, column `x*f + j`. This is upstream's NCHW channel order moved last, so an upstream mask
      (or a converted conv head) only needs an NCHW -> NHWC transpose.
    factor: f, the upsampling factor (upstream `flow_downsample`, 8).

  Returns:
    (B, h*f, w*f, 2) upsampled flow.
  """
  b, h, w, _ = flow.shape
  if mask.shape != (b, h, w, 9 * factor * factor):
    raise ValueError(f"mask must be {(b, h, w, 9 * factor * factor)}, got {mask.shape}")
  padded = jnp.pad(factor * flow, ((0, 0), (1, 1), (1, 1), (0, 0)))
  # (B, h, w, 9, 2): neighbour k = 3*ky + kx reads padded[y + ky, x + kx], i.e. offset (ky-1, kx-1).
  neighbours = jnp.stack([padded[:, ky : ky + h, kx : kx + w] for ky in range(3) for kx in range(3)], axis=3)
  weights = jax.nn.softmax(mask.reshape(b, h, w, 9, factor, factor).astype(flow.dtype), axis=3)
  up = jnp.einsum("byxkij,byxkc->byixjc", weights, neighbours, precision=jax.lax.Precision.HIGHEST)
  return up.reshape(b, h * factor, w * factor, 2)


def warp_exceeds_image_bounds(
  grid: jax.Array,
  image_bounds: jax.Array | None = None,
  out_hw: HW | None = None,
  split_size: int = 1,
  threshold: float = 0.025,
) -> jax.Array:
  """Upstream's `check_if_warp_exceeds_image_boundaries`: (B,) bool, True where the warp extrapolates.

  A warp is out of bounds when more than `threshold` of its samples have |x| or |y| beyond the centre of the
  outermost valid pixel, (boundary - 1)/size in normalised units (so a sample within half a pixel of the
  edge already counts as outside).

  Args:
    grid: (B, Ho, Wo, 2) sampling grid.
    image_bounds: optional (B // split_size, 2) (height, width) of each raw image before it was padded to a
      square; the valid region of the square is then round(size * short/long) along the short side.
      Upstream broadcasts these bounds incorrectly unless exactly one warp is produced; here each warp uses
      its own image's bounds.
    out_hw: the size of the warped output (upstream `img_size[-2:]`); defaults to the grid's size.
    split_size: warps per input image (number of heads K for the cartesian warp policy).
    threshold: tolerated fraction of extrapolated samples.
  """
  ho, wo = _hw(out_hw) if out_hw is not None else grid.shape[1:3]
  f32 = jnp.float32
  if image_bounds is None:
    bound_y = jnp.full((grid.shape[0],), ho, f32)
    bound_x = jnp.full((grid.shape[0],), wo, f32)
  else:
    bounds = jnp.repeat(jnp.asarray(image_bounds, f32), split_size, axis=0)
    bh, bw = bounds[:, 0], bounds[:, 1]
    landscape = bh < bw
    bound_y = jnp.round(jnp.where(landscape, ho * bh / bw, f32(ho)))
    bound_x = jnp.round(jnp.where(landscape, f32(wo), wo * bw / bh))
  g = grid.reshape(grid.shape[0], -1, 2).astype(f32)
  frac_x = jnp.mean(jnp.abs(g[..., 0]) > ((bound_x - 1.0) / wo)[:, None], axis=1)
  frac_y = jnp.mean(jnp.abs(g[..., 1]) > ((bound_y - 1.0) / ho)[:, None], axis=1)
  return (frac_x > threshold) | (frac_y > threshold)
