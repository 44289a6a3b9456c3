"""Specification of the point ops (`jaxgeal.ops.points`): congeal, uncongeal and transfer key points.

Parity: the point calls recorded in every `stn.json` (upstream `ComposedSTN` / `SpatialTransformer`
`congeal_points`, `uncongeal_points`, `transfer_points`) are replayed from the warps the same fixture records
for the input images `x` (`sim_matrix`, the `return_full` residual flow `congeal_full_warp`, `delta_flow`);
multi-head fixtures select the head of each image from the recorded `(B, K)` score-tensor warp policy.
Upstream's outputs on the second batch `xB` (`uncongealed_points`, `transferred_points*`,
`sim_uncongealed_points`, `sim_transferred_points`) need the STN's warps of `xB`, which are not recorded; they
are checked through the STN (tests of `jaxgeal.models.stn`). Here only the similarity trio is cross-checked:
xB's matrix is estimated from `sim_uncongealed_points` and must then predict `sim_transferred_points`.

Properties: normalisation round trips and pixel centres, closed-form similarity inverse, nearest neighbours on
identity grids, first-minimum ties, chunked == unchunked search, memory of a 128x128 x 10,000-point search.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgeal.ops import points as P
from jaxgeal.ops import warp
from tests.fixtures import assert_close, call_kwargs, collect

ATOL_PX = 1e-4  # Pixels; upstream's float32-vs-float64 spread on STN points is below 3e-5 of S.


# ---------------------------------------------------------------------------------------------------------
# Replaying upstream's recorded calls.
# ---------------------------------------------------------------------------------------------------------


def _method_args(call: str, method: str) -> str:
  """The text inside `.method(...)` of a recorded call (one level of nested parentheses allowed)."""
  m = re.search(rf"(?<![A-Za-z_]){method}\(((?:[^()]|\([^()]*\))*)\)", call)
  assert m is not None, f"no {method}(...) in recorded call {call!r}"
  return m.group(1)


def _flags(args: str) -> dict[str, bool]:
  return {k: v == "True" for k, v in re.findall(r"(\w+)=(True|False)", args)}


def _positional(args: str) -> list[str]:
  return [a.strip() for a in re.split(r",(?![^()]*\))", args) if a.strip() and "=" not in a]


class _Replay:
  """Sizes read from a stn fixture and the per-image warp selection of a recorded call."""

  def __init__(self, fx):
    self.fx = fx
    ctor = call_kwargs(fx.meta["constructor"]["t_ema"]["call"])
    self.flow_size = ctor["flow_size"]
    self.num_heads = ctor.get("num_heads", 1)
    self.image_size = fx.meta["arrays"]["x"]["shape"][-1]
    self.batch = fx.meta["arrays"]["x"]["shape"][0]

  def select(self, name: str, call: str) -> jnp.ndarray:
    """The recorded (image-major B*K) warp `name` restricted to the head each image uses in `call`."""
    warps = jnp.asarray(self.fx[name])
    m = re.search(r"warp_policy=(\w+)", call)
    if m is None:  # Cartesian policy: upstream's point functions only work with one head.
      assert warps.shape[0] == self.batch, f"{name}: {warps.shape[0]} warps for {self.batch} images"
      return warps
    return P.select_heads(warps, jnp.asarray(self.fx[m.group(1)]), self.num_heads)


@pytest.mark.parity
@pytest.mark.parametrize("fx", collect("stn"))
def test_congeal_points_similarity_parity(fx):
  """`stns[0].congeal_points(x, pointsA, ...)`: closed-form inverse of [M; 0 0 1] with x's recorded matrix."""
  r = _Replay(fx)
  call = fx.call("sim_congealed_points")["call"]
  args = _method_args(call, "congeal_points")
  img, pts = _positional(args)
  assert img == "x", f"recorded matrices belong to x, the call congeals {img}"
  flags = _flags(args)
  out = P.congeal_points_similarity(
    r.select("sim_matrix", call),
    jnp.asarray(fx[pts]),
    r.image_size,
    normalize_input_points=flags.get("normalize_input_points", True),
    unnormalize_output_points=flags.get("unnormalize_output_points", False),
  )
  err = assert_close(out, fx["sim_congealed_points"], ATOL_PX, f"{fx.id}:sim_congealed_points")
  print(f"{fx.id}: sim_congealed_points max error {err:.2e} px")


@pytest.mark.parity
@pytest.mark.parametrize("fx", collect("stn"))
def test_congeal_points_composed_parity(fx):
  """`t_ema.congeal_points(x, pointsA, return_full=True)`: integer indices must match exactly."""
  r = _Replay(fx)
  call = fx.call("congealed_points")["call"]
  args = _method_args(call, "congeal_points")
  img, pts = _positional(args)
  assert img == "x"
  assert _flags(args).get("normalize_input_points", True)
  matrix = r.select("sim_matrix", call)
  points = jnp.asarray(fx[pts])
  expected = fx["congealed_points"]
  assert np.array_equal(expected, np.round(expected))

  # return_full's "warp" is the flow STN's residual flow, the same as the forward pass's `delta_flow`.
  residual = jnp.asarray(fx["congeal_full_warp"])
  assert residual.shape[1:3] == (r.flow_size, r.flow_size)
  assert_close(residual, r.select("delta_flow", call), 1e-6, f"{fx.id}:congeal_full_warp vs delta_flow")

  congeal = jax.jit(P.congeal_points_composed, static_argnames=("image_size", "chunk_size"))
  num_points = points.shape[1]
  for chunk in (None, 5, num_points):  # 5 pads the last chunk.
    out = congeal(matrix, residual, points, image_size=r.image_size, chunk_size=chunk)
    assert out.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(out), expected, err_msg=f"{fx.id}: chunk_size={chunk}")
  out = P.congeal_points_composed(matrix, r.select("delta_flow", call), points, r.image_size)
  np.testing.assert_array_equal(np.asarray(out), expected)
  # The flow-only search on the explicit grid identity + residual gives the same indices.
  _, sim_points = P.congeal_points_composed(matrix, residual, points, r.image_size, return_similarity_points=True)
  grid = residual + warp.identity_grid(r.flow_size, residual.shape[0])
  np.testing.assert_array_equal(np.asarray(P.congeal_points_flow(grid, sim_points, r.image_size)), expected)


@pytest.mark.parity
@pytest.mark.parametrize("fx", collect("stn"))
def test_similarity_transfer_consistent_with_recorded_uncongeal(fx):
  """The similarity trio on xB, whose matrix is not recorded: estimate it, then predict the transfer.

  `sim_uncongealed_points` = unnormalize([normalize(q), 1] M_B^T) for known q, so M_B follows by least squares
  (it must fit to float32 rounding and be a similarity). `sim_transferred_points` then depends only on x's
  recorded matrix, M_B and the normalisation chain of `transfer_points`, which this checks.
  """
  r = _Replay(fx)
  call = fx.call("sim_uncongealed_points")["call"]
  s, fs = r.image_size, r.flow_size
  uncongeal_args = _method_args(call, "uncongeal_points")
  assert "points_congealed*(S-1)/(fs-1)" in uncongeal_args.replace(" ", ""), uncongeal_args
  assert _flags(uncongeal_args).get("normalize_input_points")
  q = jnp.asarray(fx["points_congealed"] * (s - 1) / (fs - 1))
  q_n = np.asarray(P.normalize_points(q, s, s), np.float64)
  target = np.asarray(P.normalize_points(jnp.asarray(fx["sim_uncongealed_points"]), s, s), np.float64)
  matrices = []
  for b in range(q_n.shape[0]):
    design = np.concatenate([q_n[b], np.ones((q_n.shape[1], 1))], axis=1)
    sol = np.linalg.lstsq(design, target[b], rcond=None)[0].T  # (2, 3)
    np.testing.assert_allclose(sol[0, 0], sol[1, 1], atol=1e-5)  # A similarity: [[a, -b], [b, a]].
    np.testing.assert_allclose(sol[0, 1], -sol[1, 0], atol=1e-5)
    matrices.append(sol)
  matrix_b = jnp.asarray(np.stack(matrices), jnp.float32)
  refit = P.uncongeal_points_similarity(matrix_b, q, s, normalize_input_points=True)
  err_fit = assert_close(refit, fx["sim_uncongealed_points"], ATOL_PX, f"{fx.id}:sim_uncongealed fit")

  matrix_a = r.select("sim_matrix", fx.call("sim_transferred_points")["call"])
  out = P.transfer_points_similarity(matrix_a, matrix_b, jnp.asarray(fx["pointsA"]), s)
  err = assert_close(out, fx["sim_transferred_points"], ATOL_PX, f"{fx.id}:sim_transferred_points")
  print(f"{fx.id}: fit residual {err_fit:.2e} px, sim_transferred_points max error {err:.2e} px")


# ---------------------------------------------------------------------------------------------------------
# Properties.
# ---------------------------------------------------------------------------------------------------------


def _random_similarity(rng, batch):
  return warp.make_affine_matrix(
    *(jnp.asarray(rng.normal(0.0, s, (batch, 1)), jnp.float32) for s in (0.3, 0.2, 0.1, 0.1))
  )[:, 0]


@pytest.mark.parametrize("res,out_res", [(128, 128), (128, 64), (64, 48), (256, 17)])
def test_normalize_unnormalize_are_inverses(res, out_res):
  p = jnp.asarray(np.random.default_rng(0).uniform(-5.0, out_res + 5.0, (3, 50, 2)), jnp.float32)
  back = P.unnormalize_points(P.normalize_points(p, res, out_res), res, out_res)
  assert_close(back, p, 1e-4, "round trip")
  n = jnp.asarray(np.random.default_rng(1).uniform(-1.2, 1.2, (3, 50, 2)), jnp.float32)
  assert_close(P.normalize_points(P.unnormalize_points(n, res, out_res), res, out_res), n, 1e-6, "inverse")


def test_normalize_maps_pixels_to_centres():
  s = 37
  i = jnp.arange(s, dtype=jnp.float32)
  assert_close(P.normalize_points(i, s, s), (2.0 * i + 1.0) / s - 1.0, 1e-6, "pixel centres")


def test_select_heads_is_image_major():
  warps = np.arange(2 * 3 * 2 * 3, dtype=np.float32).reshape(6, 2, 3)  # Row b*K + k.
  scores = jnp.asarray([[0.1, 0.7, 0.7], [0.0, 0.0, 0.9]])  # Ties take the first maximum.
  np.testing.assert_array_equal(np.asarray(P.select_heads(jnp.asarray(warps), scores, 3)), warps[[1, 5]])
  flipped = jnp.asarray([[0.0, 0.0, 0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]])  # K' = 2K.
  np.testing.assert_array_equal(np.asarray(P.select_heads(jnp.asarray(warps), flipped, 3)), warps[[1, 3]])


def test_similarity_congeal_then_uncongeal_returns_points():
  rng = np.random.default_rng(2)
  s = 128
  matrix = _random_similarity(rng, 4)
  pts = jnp.asarray(rng.uniform(0.0, s - 1.0, (4, 30, 2)), jnp.float32)
  congealed = P.congeal_points_similarity(matrix, pts, s)
  back = P.uncongeal_points_similarity(matrix, congealed, s)
  err = assert_close(back, pts, 1e-4, "similarity round trip")
  m3 = warp.make_3x3(matrix) @ warp.make_3x3(P.invert_affine(matrix))
  assert_close(m3, jnp.broadcast_to(jnp.eye(3), m3.shape), 1e-5, "inverse")
  print(f"similarity round trip max error {err:.2e} px")


def test_uncongeal_through_affine_grid_matches_closed_form():
  """Bilinear sampling of affine_grid(M) is exact for points between the outer pixel centres."""
  rng = np.random.default_rng(3)
  fs, s = 64, 128
  matrix = _random_similarity(rng, 2)
  grid = warp.affine_grid(matrix, fs)
  q = jnp.asarray(rng.uniform(-(fs - 1) / fs, (fs - 1) / fs, (2, 40, 2)), jnp.float32)
  via_grid = P.uncongeal_points(grid, q, s)
  closed = P.uncongeal_points_similarity(matrix, q, s)
  assert_close(via_grid, closed, 1e-3, "grid vs closed form")  # float32 grid values times S/2 = 64.


def test_uncongeal_output_resolution_resizes_the_grid():
  rng = np.random.default_rng(4)
  grid = jnp.asarray(rng.uniform(-1.0, 1.0, (2, 16, 16, 2)), jnp.float32)
  q = jnp.asarray(rng.uniform(-2.0, 17.0, (2, 9, 2)), jnp.float32)
  kw = {"normalize_input_points": True}
  for res in (32, 24):
    out = P.uncongeal_points(grid, q, 40, 16, output_resolution=res, **kw)
    ref = P.uncongeal_points(warp.resize_grid(grid, scale_factor=res / 16), q, 40, 16, **kw)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))
    already = P.uncongeal_points(warp.resize_grid(grid, scale_factor=res / 16), q, 40, 16, output_resolution=res, **kw)
    np.testing.assert_array_equal(np.asarray(already), np.asarray(ref))


def _away_from_ties(x):
  frac = np.abs(x - np.floor(x) - 0.5)
  return frac > 1e-3


@pytest.mark.parametrize("s,fs", [(64, 64), (128, 64), (50, 32)])
def test_congeal_flow_identity_returns_nearest_pixel(s, fs):
  rng = np.random.default_rng(5)
  pts = rng.uniform(-3.0, s + 2.0, (2, 300, 2)).astype(np.float32)
  # Continuous index of the point in the fs grid: pixel centres of both sizes span the same [-1, 1] image.
  cont = (pts + 0.5) * fs / s - 0.5
  keep = np.all(_away_from_ties(cont), axis=(0, 2))
  pts, cont = pts[:, keep], cont[:, keep]
  expected = np.clip(np.round(cont), 0, fs - 1)
  out = P.congeal_points_flow(warp.identity_grid(fs, 2), jnp.asarray(pts), s)
  np.testing.assert_array_equal(np.asarray(out), expected)
  residual = P.congeal_points_flow(jnp.zeros((2, fs, fs, 2)), jnp.asarray(pts), s, residual=True)
  np.testing.assert_array_equal(np.asarray(residual), expected)


def test_congeal_flow_ties_take_first_minimum():
  grid = jnp.zeros((1, 4, 5, 2))  # Every sample equidistant: flat index 0.
  out = P.congeal_points_flow(grid, jnp.asarray([[[0.3, -0.2]]]), normalize_input_points=False)
  np.testing.assert_array_equal(np.asarray(out), [[[0, 0]]])
  grid = grid.at[0, 2, 3].set(jnp.asarray([0.5, 0.5])).at[0, 1, 4].set(jnp.asarray([0.5, 0.5]))
  out = P.congeal_points_flow(grid, jnp.asarray([[[0.5, 0.5]]]), normalize_input_points=False, chunk_size=1)
  np.testing.assert_array_equal(np.asarray(out), [[[4, 1]]])  # Row-major: (y=1, x=4) before (y=2, x=3).


def test_chunked_and_unchunked_nearest_neighbours_agree():
  rng = np.random.default_rng(6)
  fs = 32
  residual = jnp.asarray(0.2 * rng.normal(size=(2, fs, fs, 2)), jnp.float32)
  pts = jnp.asarray(rng.uniform(-4.0, 67.0, (2, 333, 2)), jnp.float32)
  full = P.congeal_points_flow(residual, pts, 64, residual=True, chunk_size=None)
  f = jax.jit(functools.partial(P.congeal_points_flow, image_size=64, residual=True), static_argnames="chunk_size")
  for chunk in (1, 64, 100, 333, 1000):
    np.testing.assert_array_equal(np.asarray(f(residual, pts, chunk_size=chunk)), np.asarray(full))
  # Against a direct numpy search.
  grid = np.asarray(residual + warp.identity_grid(fs, 2)).reshape(2, -1, 2)
  p = np.asarray(P.normalize_points(pts, 64, 64))
  flat = np.argmin(((grid[:, None] - p[:, :, None]) ** 2).sum(-1), axis=-1)
  np.testing.assert_array_equal(np.asarray(full), np.stack([flat % fs, flat // fs], -1))


def test_congeal_flow_memory_128_grid_10000_points():
  size, n, chunk = 128, 10_000, 256
  pts = np.random.default_rng(7).uniform(0.0, size - 1.0, (1, n, 2)).astype(np.float32)
  pts = pts[:, np.all(_away_from_ties(pts), axis=(0, 2))]
  f = jax.jit(functools.partial(P.congeal_points_flow, image_size=size, chunk_size=chunk))
  grid = warp.identity_grid(size, 1)
  compiled = f.lower(grid, jnp.asarray(pts)).compile()
  analysis = compiled.memory_analysis()
  if analysis is not None:  # The full (P, H*W) distance matrix would take 4 * n * size**2 = 655 MB.
    assert analysis.temp_size_in_bytes <= 4 * chunk * size * size * 2, analysis.temp_size_in_bytes
  out = compiled(grid, jnp.asarray(pts))
  np.testing.assert_array_equal(np.asarray(out), np.round(pts))


def test_composed_and_transfer_identity_warps():
  """Identity warps expose upstream's size mixing: index j of the fs grid uncongeals to j (S-1)/(fs-1).

  (normalize(j, S, fs) is not the centre of cell j; with S > fs the last index lands beyond the last pixel
  centre of B's grid, where border padding clamps it.)
  """
  rng = np.random.default_rng(8)
  s, fs, b = 128, 64, 2
  ident = jnp.broadcast_to(jnp.eye(2, 3), (b, 2, 3))
  pts = rng.uniform(0.0, s - 1.0, (b, 40, 2)).astype(np.float32)
  cont = (pts + 0.5) * fs / s - 0.5
  pts = pts[:, np.all(_away_from_ties(cont), axis=(0, 2))]
  idx = P.congeal_points_composed(ident, jnp.zeros((b, fs, fs, 2)), jnp.asarray(pts), s)
  np.testing.assert_array_equal(np.asarray(idx), np.round((pts + 0.5) * fs / s - 0.5))
  grid_b = warp.identity_grid(fs, b)
  out = P.transfer_points(ident, jnp.zeros((b, fs, fs, 2)), grid_b, jnp.asarray(pts), s)
  limit = (fs - 1) / fs  # Border padding clamps at the outer pixel centres of B's fs x fs grid.
  q = np.clip((np.asarray(idx) / (fs - 1) - 0.5) * 2 * (s - 1) / s, -limit, limit)
  expected = (q / ((s - 1) / s) / 2 + 0.5) * (s - 1)
  interior = np.all((np.asarray(idx) > 0) & (np.asarray(idx) < fs - 1), axis=-1)
  np.testing.assert_allclose(expected[interior], (np.asarray(idx) * (s - 1) / (fs - 1))[interior], atol=1e-9)
  assert_close(out, expected, 1e-4, "identity transfer")
  # A similarity on A moves its points; congealing undoes it before the flow search.
  matrix = _random_similarity(rng, b)
  moved = P.uncongeal_points_similarity(matrix, P.normalize_points(jnp.asarray(pts), s, s), s)
  idx2 = P.congeal_points_composed(matrix, jnp.zeros((b, fs, fs, 2)), moved, s)
  np.testing.assert_array_equal(np.asarray(idx2), np.asarray(idx))  # Points are 1e-3 cells from any tie.
  t = jax.jit(P.transfer_points, static_argnames=("image_size", "output_resolution", "chunk_size"))
  out_res = t(
    ident, jnp.zeros((b, fs, fs, 2)), grid_b, jnp.asarray(pts), image_size=s, output_resolution=2 * fs, chunk_size=16
  )
  assert_close(np.asarray(out_res)[interior], np.asarray(out)[interior], 1e-4, "output_resolution interior")
