"""Point correspondences through STN warps: congeal, uncongeal and transfer key points.

Implements Sec. 4.2 and App. B.7 of Peebles et al., "GAN-Supervised Dense Visual Alignment" (CVPR 2022),
i.e. what upstream `ComposedSTN` / `SpatialTransformer.{congeal,uncongeal,transfer}_points` compute, as pure
functions of the *warps* (matrices, flows, grids) rather than of the networks, so that the STN module and the
applications (PCK-Transfer, propagation) can share them:

  * uncongeal (congealed -> image, App. B.7 "the easy step"): the STN's reverse sampling grid `g` already maps
    congealed positions to image positions, so a congealed point is sent to `g` sampled (bilinearly, border
    padding) at that point; for a similarity warp this is `[p, 1] M^T` in closed form.
  * congeal (image -> congealed): the inverse warp. For a similarity it is the closed-form inverse of
    `[M; 0 0 1]`; for a flow it is approximated by nearest neighbours (App. B.7),
    `g^-1(p) ~ argmin_{i',j'} ||g_{i',j'} - p||`, returning the integer (x, y) index of that grid sample.
  * transfer (PCK-Transfer, Sec. 4.2): congeal the points of image A, then uncongeal them into image B.

Point conventions (upstream's): pixel points are (x, y) in [0, S-1] for an image of size S. `normalize_points`
maps them to the grid's [-1, 1] coordinates with pixel centres at (2i + 1)/S - 1 (align_corners=False):
`normalize(p, res, out_res) = (p/(out_res-1) - 0.5) * 2 * (res-1)/res`. Upstream mixes sizes on purpose in
some places (kept here): the composed STN's `uncongeal_points` normalises congealed points with `res` = image
size and `out_res` = flow size. Flow congealing returns int32 (x, y) indices into the flow_size x flow_size
grid of `identity + residual flow` (the similarity part is handled in closed form before, never searched).

Multi-head (clustering) STNs produce image-major `B*K` warps; `select_heads` picks, per image, the head
`argmax(scores) % K` exactly as upstream's `(B, K)` score-tensor `warp_policy` does.

Everything is jit-able with static shapes (sizes, flags and chunk sizes are static Python values).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxgeal.ops import warp

Array = jax.Array


# ---------------------------------------------------------------------------------------------------------
# Coordinate conventions.
# ---------------------------------------------------------------------------------------------------------


def normalize_points(p: Array, res: int, out_res: int) -> Array:
  """Pixel points -> normalised grid coordinates, upstream `SpatialTransformer.normalize`.

  `(p/(out_res-1) - 0.5) * 2 * (res-1)/res`, evaluated in upstream's order. With `res == out_res == S` pixel
  `i` of [0, S-1] goes to its centre (2i + 1)/S - 1 (align_corners=False).
  """
  return (p / (out_res - 1) - 0.5) * 2.0 * ((res - 1) / res)


def unnormalize_points(p: Array, res: int, out_res: int) -> Array:
  """Inverse of `normalize_points`, upstream `SpatialTransformer.unnormalize`.

  `(p/((res-1)/res)/2 + 0.5) * (out_res-1)`, in upstream's order.
  """
  return (p / ((res - 1) / res) / 2.0 + 0.5) * (out_res - 1)


def select_heads(warps: Array, scores: Array, num_heads: int) -> Array:
  """Per image, the warp of head `argmax(scores) % K` from image-major `(B*K, ...)` cartesian-policy warps.

  This is what upstream computes when a `(B, K')` score tensor is passed as `warp_policy` (the modulo folds
  the flipped classes of a cluster classifier with K' = 2K back onto the K heads; ties pick the first max).
  """
  b = scores.shape[0]
  if warps.shape[0] != b * num_heads:
    raise ValueError(f"expected {b} x {num_heads} image-major warps, got {warps.shape[0]}")
  head = jnp.argmax(scores, axis=1) % num_heads
  return warps.reshape((b, num_heads) + warps.shape[1:])[jnp.arange(b), head]


def _check_points(points: Array, batch: int):
  if points.ndim != 3 or points.shape[0] != batch or points.shape[-1] != 2:
    raise ValueError(f"points must be (B={batch}, P, 2), got {points.shape}")


def _require_size(size: int | None, what: str):
  if size is None:
    raise ValueError(f"image_size is required to {what}")


# ---------------------------------------------------------------------------------------------------------
# Similarity warps: closed form.
# ---------------------------------------------------------------------------------------------------------


def _apply_matrix(matrix: Array, p: Array) -> Array:
  """[p, 1] @ M^T for (B, 2, 3) matrices and (B, P, 2) points, elementwise (no low-precision matmul)."""
  m = matrix[:, None]  # (B, 1, 2, 3)
  x, y = p[..., 0], p[..., 1]
  return jnp.stack(
    [m[..., 0, 0] * x + m[..., 0, 1] * y + m[..., 0, 2], m[..., 1, 0] * x + m[..., 1, 1] * y + m[..., 1, 2]], axis=-1
  )


def invert_affine(matrix: Array) -> Array:
  """(B, 2, 3) -> (B, 2, 3): the top rows of inverse([M; 0 0 1]) = [A^-1, -A^-1 t] (adjugate / determinant)."""
  a, b, tx = matrix[:, 0, 0], matrix[:, 0, 1], matrix[:, 0, 2]
  c, d, ty = matrix[:, 1, 0], matrix[:, 1, 1], matrix[:, 1, 2]
  det = a * d - b * c
  ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
  rows = [jnp.stack([ia, ib, -(ia * tx + ib * ty)], -1), jnp.stack([ic, id_, -(ic * tx + id_ * ty)], -1)]
  return jnp.stack(rows, axis=-2)


def congeal_points_similarity(
  matrix: Array,
  points: Array,
  image_size: int | None = None,
  *,
  normalize_input_points: bool = True,
  unnormalize_output_points: bool = False,
) -> Array:
  """Image -> congealed points of a similarity (or any affine) STN, in closed form.

  Upstream `SpatialTransformer.congeal_points` (similarity branch): the sampling grid is `[g, 1] M^T`, so
  its inverse maps a point by `inverse([M; 0 0 1])` (App. B.7, "analytically compute this inverse").

  Args:
    matrix: (B, 2, 3) warp matrices (congealed -> image, normalised coordinates).
    points: (B, P, 2) (x, y) points; pixels of the S x S input if `normalize_input_points`, else normalised.
    image_size: S, the size of the image the matrix samples from (upstream `source_res`).
    normalize_input_points: normalise with `normalize(p, S, S)` first (upstream default True).
    unnormalize_output_points: return pixels in [0, S-1] via `unnormalize(q, S, S)` (upstream default
      False: normalised congealed coordinates).

  Returns:
    (B, P, 2) congealed points.
  """
  _check_points(points, matrix.shape[0])
  p = points.astype(jnp.result_type(matrix.dtype, jnp.float32))
  if normalize_input_points:
    _require_size(image_size, "normalize the input points")
    p = normalize_points(p, image_size, image_size)
  q = _apply_matrix(invert_affine(matrix), p)
  if unnormalize_output_points:
    _require_size(image_size, "unnormalize the output points")
    q = unnormalize_points(q, image_size, image_size)
  return q


def uncongeal_points_similarity(
  matrix: Array,
  points_congealed: Array,
  image_size: int | None = None,
  *,
  normalize_input_points: bool = False,
  unnormalize_output_points: bool = True,
) -> Array:
  """Congealed -> image points of a similarity STN: `[p, 1] M^T` (upstream's closed-form branch).

  Upstream normalises input points with `normalize(p, S, S)` (source_res and image size are both S; the
  flow size plays no role here) and unnormalises the result with `unnormalize(q, S, S)`. (Upstream's
  `input_img_for_sampling` of another size S' would use `normalize(p, S', S)` / `unnormalize(q, S, S')`;
  that variant is not needed by any caller and not supported.)
  """
  _check_points(points_congealed, matrix.shape[0])
  p = points_congealed.astype(jnp.result_type(matrix.dtype, jnp.float32))
  if normalize_input_points:
    _require_size(image_size, "normalize the input points")
    p = normalize_points(p, image_size, image_size)
  q = _apply_matrix(matrix, p)
  if unnormalize_output_points:
    _require_size(image_size, "unnormalize the output points")
    q = unnormalize_points(q, image_size, image_size)
  return q


def transfer_points_similarity(matrix_a: Array, matrix_b: Array, points_a: Array, image_size: int) -> Array:
  """Upstream `SpatialTransformer.transfer_points` for a similarity STN: A pixels -> B pixels in [0, S-1].

  Congeal A with normalised output (no unnormalise), then uncongeal into B without renormalising.
  """
  congealed = congeal_points_similarity(matrix_a, points_a, image_size)
  return uncongeal_points_similarity(matrix_b, congealed, image_size)


# ---------------------------------------------------------------------------------------------------------
# Flow warps: sampling the grid (uncongeal) and nearest neighbours (congeal).
# ---------------------------------------------------------------------------------------------------------


def uncongeal_points(
  grid: Array,
  points_congealed: Array,
  res: int | None = None,
  out_res: int | None = None,
  *,
  normalize_input_points: bool = False,
  unnormalize_output_points: bool = True,
  output_resolution: int | None = None,
) -> Array:
  """Congealed -> image points by sampling the sampling grid (upstream `ComposedSTN.uncongeal_points`).

  `g` maps congealed positions to image positions (reverse sampling, Sec. 4.1), so a congealed point `p`
  lands at `grid_sample(g, p)` (bilinear, border padding, align_corners=False).

  Args:
    grid: (B, H, W, 2) full sampling grid of image B (similarity composed with identity + residual flow), at
      flow_size or already at `output_resolution`.
    points_congealed: (B, P, 2) (x, y) congealed points: pixels of the flow_size grid if
      `normalize_input_points` (ints are accepted, e.g. congealed indices), else normalised coordinates.
    res: S, the size of image B (used to normalise and unnormalise).
    out_res: flow_size (upstream `stn_in_size`), the congealed size the input pixels refer to. Input points
      are normalised with `normalize(p, res=S, out_res=flow_size)`, upstream's mix of the two sizes, also
      when the grid has been resized to `output_resolution`. Defaults to the grid's size.
    normalize_input_points: upstream default False (the caller passes normalised points).
    unnormalize_output_points: return pixels of image B, `unnormalize(q, S, S)` (upstream default True).
    output_resolution: if given and the grid is not already that size, the grid is first resized with
      `F.interpolate(scale_factor=output_resolution / H, mode='bilinear')` as upstream's forward does.

  Returns:
    (B, P, 2) points in image B.
  """
  b, h, w, _ = grid.shape
  _check_points(points_congealed, b)
  if output_resolution is not None and (h, w) != (output_resolution, output_resolution):
    grid = warp.resize_grid(grid, scale_factor=output_resolution / w)
  p = points_congealed.astype(jnp.result_type(grid.dtype, jnp.float32))
  if normalize_input_points:
    _require_size(res, "normalize the input points")
    p = normalize_points(p, res, w if out_res is None else out_res)
  q = warp.grid_sample(grid, p[:, :, None, :], padding_mode="border")[:, :, 0, :]
  if unnormalize_output_points:
    _require_size(res, "unnormalize the output points")
    q = unnormalize_points(q, res, res)
  return q


def _nearest_flat_index(grid_flat: Array, points: Array) -> Array:
  """(B, N, 2) grid, (B, C, 2) points -> (B, C) index of the nearest grid sample (first on ties)."""
  # Squared distances computed from the differences: more accurate than upstream's |p|^2 + |g|^2 - 2<g, p>
  # expansion; both agree on every recorded point (the best/second-best gap there is 1.1e-4 >> 1e-7).
  diff = grid_flat[:, None, :, :] - points[:, :, None, :]  # (B, C, N, 2)
  dist = diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1]
  return jnp.argmin(dist, axis=-1)  # First minimum, as torch.argmin.


def nearest_grid_points(grid: Array, points: Array, chunk_size: int | None = 256) -> Array:
  """Integer (x, y) indices of the grid sample nearest to each point: `argmin_{i',j'} ||g_{i',j'} - p||`.

  Brute force over all H*W samples (App. B.7), processed `chunk_size` points at a time with `lax.map` so
  the distance buffer is O(B * chunk_size * H * W) instead of O(B * P * H * W).

  Args:
    grid: (B, H, W, 2) grid values (normalised (x, y)).
    points: (B, P, 2) normalised (x, y) points.
    chunk_size: points per chunk; None (or >= P) searches all points at once.

  Returns:
    (B, P, 2) int32 (x, y) = (idx % W, idx // W) of the first minimum of the row-major flat index.
  """
  b, h, w, _ = grid.shape
  _check_points(points, b)
  dtype = jnp.result_type(grid.dtype, points.dtype, jnp.float32)
  grid_flat = grid.reshape(b, h * w, 2).astype(dtype)
  points = points.astype(dtype)
  n = points.shape[1]
  if chunk_size is None or chunk_size >= n:
    flat = _nearest_flat_index(grid_flat, points)
  else:
    num_chunks = math.ceil(n / chunk_size)
    padded = jnp.pad(points, ((0, 0), (0, num_chunks * chunk_size - n), (0, 0)))
    chunks = padded.reshape(b, num_chunks, chunk_size, 2).transpose(1, 0, 2, 3)
    flat = jax.lax.map(lambda c: _nearest_flat_index(grid_flat, c), chunks)  # (chunks, B, chunk)
    flat = flat.transpose(1, 0, 2).reshape(b, num_chunks * chunk_size)[:, :n]
  flat = flat.astype(jnp.int32)
  return jnp.stack([flat % w, flat // w], axis=-1)  # upstream unravel_index -> (x, y).


def congeal_points_flow(
  grid: Array,
  points: Array,
  image_size: int | None = None,
  *,
  normalize_input_points: bool = True,
  residual: bool = False,
  chunk_size: int | None = 256,
) -> Array:
  """Image -> congealed points of a flow STN (upstream `SpatialTransformer.congeal_points`, flow branch).

  Args:
    grid: (B, H, W, 2) `identity + residual flow` (the flow STN's own grid, without the similarity base
      warp), or the residual flow itself with `residual=True` (the identity grid is then added).
    points: (B, P, 2) (x, y) points: pixels of the S x S image if `normalize_input_points`, else normalised.
    image_size: S, for `normalize(p, S, S)`.
    normalize_input_points: upstream default True.
    residual: `grid` is the residual flow.
    chunk_size: points per nearest-neighbour chunk (None: all at once).

  Returns:
    (B, P, 2) int32 (x, y) indices into the H x W congealed grid (no sub-pixel refinement; points mapped
    outside the congealed image clamp to the border sample nearest to them).
  """
  if residual:
    grid = grid + warp.identity_grid(grid.shape[1:3], grid.shape[0], grid.dtype)
  p = points.astype(jnp.result_type(grid.dtype, jnp.float32))
  if normalize_input_points:
    _require_size(image_size, "normalize the input points")
    p = normalize_points(p, image_size, image_size)
  return nearest_grid_points(grid, p, chunk_size)


# ---------------------------------------------------------------------------------------------------------
# Composed (similarity -> flow) STN and PCK-Transfer.
# ---------------------------------------------------------------------------------------------------------


def congeal_points_composed(
  matrix: Array,
  residual_flow: Array,
  points: Array,
  image_size: int,
  *,
  normalize_input_points: bool = True,
  chunk_size: int | None = 256,
  return_similarity_points: bool = False,
) -> Array | tuple[Array, Array]:
  """Image -> congealed points of the ['similarity', 'flow'] STN, upstream `ComposedSTN.congeal_points`.

  Stage 1 (similarity, closed form): `p_n = normalize(p, S, S)`, `p_c = inverse([M; 0 0 1]) [p_n, 1]`,
  unnormalised back to [0, S-1]. Stage 2 (flow): normalised again with S and searched by nearest neighbours
  among `identity + residual_flow`; the similarity warp is not part of the searched grid (the flow STN's
  residual lives in the similarity-congealed frame). Upstream's `return_full=True` returns the final image,
  the *residual* flow (what this function takes) and these indices.

  Args:
    matrix: (B, 2, 3) similarity matrices of image A (with `iters > 1`, the composed matrix).
    residual_flow: (B, fs, fs, 2) residual flow of the flow STN for image A (always at flow_size).
    points: (B, P, 2) (x, y) points of A; pixels in [0, S-1] if `normalize_input_points`.
    image_size: S, the size of image A.
    normalize_input_points: stage 1's flag (stage 2 always normalises, as upstream).
    chunk_size: see `nearest_grid_points`.
    return_similarity_points: also return stage 1's points (pixels in [0, S-1]).

  Returns:
    (B, P, 2) int32 (x, y) indices into the fs x fs congealed grid (independent of output_resolution), and
    optionally the (B, P, 2) similarity-congealed points.
  """
  sim_points = congeal_points_similarity(
    matrix, points, image_size, normalize_input_points=normalize_input_points, unnormalize_output_points=True
  )
  indices = congeal_points_flow(residual_flow, sim_points, image_size, residual=True, chunk_size=chunk_size)
  return (indices, sim_points) if return_similarity_points else indices


def transfer_points(
  matrix_a: Array,
  residual_flow_a: Array,
  grid_b: Array,
  points_a: Array,
  image_size: int,
  *,
  output_resolution: int | None = None,
  chunk_size: int | None = 256,
) -> Array:
  """PCK-Transfer (Sec. 4.2, App. B.7), upstream `ComposedSTN.transfer_points`: congeal A, uncongeal into B.

  The congealed integer indices are normalised with `normalize(p, res=S, out_res=flow_size)` (upstream's mix
  of sizes) and looked up in B's grid; with `output_resolution` B's grid is resized (or passed already at
  that size) but the indices still refer to the flow_size grid.

  Args:
    matrix_a: (B, 2, 3) similarity matrices of A.
    residual_flow_a: (B, fs, fs, 2) residual flows of A.
    grid_b: (B, H, W, 2) full sampling grid of B at flow_size (or at `output_resolution`).
    points_a: (B, P, 2) pixel (x, y) points of A in [0, S-1].
    image_size: S (A and B have the same size, as upstream asserts for batches).
    output_resolution: upstream's `output_resolution` argument.
    chunk_size: see `nearest_grid_points`.

  Returns:
    (B, P, 2) pixel (x, y) points in B, in [0, S-1] (may fall outside for warps that extrapolate).
  """
  congealed = congeal_points_composed(matrix_a, residual_flow_a, points_a, image_size, chunk_size=chunk_size)
  return uncongeal_points(
    grid_b,
    congealed,
    image_size,
    residual_flow_a.shape[2],
    normalize_input_points=True,
    output_resolution=output_resolution,
  )
