"""Specification of the warping ops (`jaxgeal.ops.warp`, `jaxgeal.ops.mipmap`).

Parity: every call recorded in `warp_ops.json` (upstream `antialiased_sampling.py` / `warping_heads.py`) is
replayed from its recorded inputs, with every size and option read from the json, and must match upstream
to 1e-5 of the output's magnitude. Properties: identities, gradients, jit, DC gain.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgeal.ops import mipmap, warp
from tests.fixtures import assert_close, collect, nchw_to_nhwc

RTOL = 1e-5  # Of the largest |expected|; upstream's own float32-vs-float64 spread is below 7e-6.
ATOL = 1e-6  # Floor for arrays of tiny magnitude.
PADDING_MODES = warp.PADDING_MODES


# ---------------------------------------------------------------------------------------------------------
# Replaying upstream's recorded calls.
# ---------------------------------------------------------------------------------------------------------


def _call_args(call: str) -> list[str]:
  """Names passed in the last parenthesised argument list of `Module(...)(a, b, kw=v)`."""
  args = re.search(r"\)\(([^()]*)\)", call).group(1)
  return [a.strip() for a in args.split(",") if a.strip() and "=" not in a]


def _kwarg(call: str, name: str):
  m = re.search(rf"\b{name}=([\w.]+)", call)
  return None if m is None else m.group(1)


def _replay_warp(fx, call):
  x, grid = _call_args(call["call"])
  img = jnp.asarray(nchw_to_nhwc(fx[x]))
  for out in call["outputs"]:
    mode = out.rsplit("_", 1)[1]
    yield out, warp.grid_sample(img, jnp.asarray(fx[grid]), padding_mode=mode), nchw_to_nhwc(fx[out])


def _replay_mipmap(fx, call):
  ctor = re.search(r"MipmapWarp\(([^()]*)\)", call["call"]).group(1)
  kwargs = {}
  if ctor.strip():  # `MipmapWarp()` keeps the default, as upstream does.
    kwargs["max_num_levels"] = float(ctor.split("=")[-1])
  if _kwarg(call["call"], "min_level") is not None:
    kwargs["min_level"] = float(_kwarg(call["call"], "min_level"))
  x, grid = _call_args(call["call"])
  img, grid = jnp.asarray(nchw_to_nhwc(fx[x])), jnp.asarray(fx[grid])
  for out in call["outputs"]:
    mode = out.rsplit("_", 1)[1]
    mode_kw = {"padding_mode": mode} if mode in PADDING_MODES else {}  # Else upstream's default.
    warped, levels = mipmap.mipmap_warp(img, grid, return_levels=True, **kwargs, **mode_kw)
    if out.endswith("_levels"):
      yield out, levels, fx[out]
    else:
      yield out, warped, nchw_to_nhwc(fx[out])


def _replay_downsample(fx, call):
  (x,) = _call_args(call["call"])
  for out in call["outputs"]:
    stride = int(re.search(r"BilinearDownsample\((\d+)", fx.meta["arrays"][out]["meaning"]).group(1))
    yield out, mipmap.bilinear_downsample(jnp.asarray(nchw_to_nhwc(fx[x])), stride), nchw_to_nhwc(fx[out])


def _replay_similarity(fx, call):
  params = re.search(r"make_affine_matrix\(\*(\w+)\)", call["call"]).group(1)
  matrix_name, grid_name = call["outputs"]
  matrix = warp.make_affine_matrix(*jnp.asarray(fx[params]))
  yield matrix_name, matrix, fx[matrix_name]
  out_hw = fx[grid_name].shape[1:3]
  yield grid_name, warp.affine_grid(matrix.reshape(-1, 2, 3), out_hw), fx[grid_name]


def _replay_apply_affine(fx, call):
  m = re.search(r"apply_affine\((\w+)\[:, (\d+)\], (\w+)\)", call["call"])
  matrix = jnp.asarray(fx[m.group(1)])[:, int(m.group(2))]
  (out,) = call["outputs"]
  yield out, warp.apply_affine(matrix, jnp.asarray(fx[m.group(3)])), fx[out]


def _replay_oob(fx, call):
  args = re.search(r"check_if_warp_exceeds_image_boundaries\(([^()]*)\)", call["call"]).group(1)
  grid, bounds, _, split = [a.strip() for a in args.split(",")]
  assert bounds == "None", "only the image_bounds=None variant is recorded here"
  (out,) = call["outputs"]
  # img_size is the warped output size, i.e. the grid's own size.
  oob = warp.warp_exceeds_image_bounds(jnp.asarray(fx[grid]), split_size=int(split))
  yield out, oob, fx[out]


def _replay_convex(fx, call):
  factor = int(_kwarg(call["call"], "flow_downsample"))
  flow, mask = re.search(r"upsample_flow\((\w+), (\w+)\)", call["call"]).groups()
  (out,) = call["outputs"]
  # Upstream's mask is (N, 9*f*f, h, w); ours keeps the channel order and moves it last.
  up = warp.convex_upsample(jnp.asarray(fx[flow]), jnp.asarray(nchw_to_nhwc(fx[mask])), factor)
  yield out, up, fx[out]


REPLAYERS = (  # (pattern identifying the upstream call, replayer)
  (r"^Warp\(\)", _replay_warp),
  (r"MipmapWarp\(", _replay_mipmap),
  (r"BilinearDownsample\(", _replay_downsample),
  (r"make_affine_matrix", _replay_similarity),
  (r"^apply_affine\(", _replay_apply_affine),
  (r"check_if_warp_exceeds_image_boundaries", _replay_oob),
  (r"upsample_flow", _replay_convex),
)


def _replayer(call):
  found = [fn for pattern, fn in REPLAYERS if re.search(pattern, call["call"])]
  assert len(found) == 1, f"no unique replayer for recorded call {call['call']!r}"
  return found[0]


def _call_params():
  params = []
  for p in collect("warp_ops"):
    fx = p.values[0]
    if fx is None:
      params.append(pytest.param(None, None, id=p.id, marks=p.marks))
      continue
    for i, call in enumerate(fx.meta["calls"]):
      params.append(pytest.param(fx, i, id=f"{p.id}-{call['outputs'][0]}"))
  return params


@pytest.mark.parity
@pytest.mark.parametrize("fx,index", _call_params())
def test_recorded_call_matches_upstream(fx, index):
  call = fx.meta["calls"][index]
  outputs = {}
  for name, actual, expected in _replayer(call)(fx, call):
    actual = np.asarray(actual, np.float64)
    err = assert_close(actual, expected, atol=ATOL, name=f"{fx.id}/{name}", rtol=RTOL)
    outputs[name] = err
    print(f"{fx.id}/{name}: max abs error {err:.2e} (max |expected| {np.abs(expected).max():.2e})")
  assert sorted(outputs) == sorted(call["outputs"]), "every recorded output is compared"


@pytest.mark.parity
@pytest.mark.parametrize("fx", collect("warp_ops"))
def test_identity_flow_matches_upstream(fx):
  """FlowHead.identity_flow: the identity grid at the convex-upsampled resolution (not a recorded call)."""
  expected = fx["identity_flow"]
  convex = next(c for c in fx.meta["calls"] if re.search(r"upsample_flow", c["call"]))
  factor = int(_kwarg(convex["call"], "flow_downsample"))
  _, h, w, _ = expected.shape
  actual = warp.identity_flow((h // factor, w // factor), factor)
  print(f"{fx.id}/identity_flow: max abs error {assert_close(actual, expected, ATOL, 'identity_flow'):.2e}")


@pytest.mark.parity
@pytest.mark.parametrize("fx", collect("warp_ops"))
def test_every_recorded_output_is_checked(fx):
  replayed = {o for c in fx.meta["calls"] for o in c["outputs"] if _replayer(c)}
  outputs = {k for k, v in fx.meta["arrays"].items() if v["kind"] == "output"}
  assert outputs - replayed <= {"identity_flow"}, outputs - replayed


# ---------------------------------------------------------------------------------------------------------
# grid_sample.
# ---------------------------------------------------------------------------------------------------------


def _image(shape, seed=0, dtype=np.float32):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(dtype))


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_identity_grid_reproduces_the_image(mode):
  img = _image((2, 5, 7, 3))
  out = warp.grid_sample(img, warp.identity_grid((5, 7), batch=2), padding_mode=mode)
  assert_close(out, img, 1e-6, f"identity/{mode}", rtol=1e-6)


def test_padding_modes_outside_the_image():
  """Zeros pads with 0, border repeats the edge pixel, reflection mirrors about the outer pixel edge."""
  img = jnp.arange(4.0).reshape(1, 1, 4, 1)  # One row: pixel centres at x = -0.75, -0.25, 0.25, 0.75.
  grid = jnp.array([[[[1.25, 0.0], [-1.25, 0.0], [1.5, 0.0]]]])  # 1, 1.5 and 2 pixels past the edge.
  sample = lambda mode: np.asarray(warp.grid_sample(img, grid, mode)).ravel()
  np.testing.assert_allclose(sample("zeros"), [0.0, 0.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(sample("border"), [3.0, 0.0, 3.0], atol=1e-6)
  # x = 1.25 is pixel index 4 = half a pixel beyond the edge at 3.5 -> mirrors to index 3; 1.5 -> index 2.5.
  np.testing.assert_allclose(sample("reflection"), [3.0, 0.0, 2.5], atol=1e-6)


def test_grid_sample_jits_and_matches_eager():
  img, grid = _image((2, 6, 8, 3)), 1.2 * jnp.tanh(_image((2, 4, 5, 2), seed=1))
  for mode in PADDING_MODES:
    eager = warp.grid_sample(img, grid, mode)
    jitted = jax.jit(warp.grid_sample, static_argnames="padding_mode")(img, grid, padding_mode=mode)
    assert_close(jitted, eager, 1e-6, f"jit/{mode}")


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_grid_sample_gradients_match_finite_differences(mode):
  """Analytic gradients w.r.t. grid and image equal central differences (float64, generic point)."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(3)
    img = jnp.asarray(rng.normal(size=(2, 5, 6, 2)))
    # Generic positions, some outside [-1, 1] so the padding branches are differentiated too.
    grid = jnp.asarray(rng.uniform(-1.3, 1.3, size=(2, 4, 3, 2)))
    probe = jnp.asarray(rng.normal(size=(2, 4, 3, 2)))
    loss = lambda im, g: jnp.sum(probe * warp.grid_sample(im, g, mode))
    d_img, d_grid = jax.grad(loss, argnums=(0, 1))(img, grid)
    eps = 1e-6
    for arg, grad, direction in ((1, d_grid, rng.normal(size=grid.shape)), (0, d_img, rng.normal(size=img.shape))):
      args = [img, grid]
      plus, minus = list(args), list(args)
      plus[arg] = args[arg] + eps * direction
      minus[arg] = args[arg] - eps * direction
      numeric = (loss(*plus) - loss(*minus)) / (2 * eps)
      analytic = jnp.sum(grad * direction)
      assert abs(float(numeric - analytic)) <= 1e-6 * max(1.0, abs(float(analytic))), (arg, numeric, analytic)


# ---------------------------------------------------------------------------------------------------------
# Grids, affine warps, resizing and composition.
# ---------------------------------------------------------------------------------------------------------


def test_zero_similarity_parameters_give_the_identity_grid():
  zeros = jnp.zeros((3, 1))
  matrix = warp.make_affine_matrix(zeros, zeros, zeros, zeros)
  assert_close(matrix[:, 0], jnp.broadcast_to(jnp.eye(2, 3), (3, 2, 3)), 0.0, "identity matrix")
  assert_close(warp.affine_grid(matrix[:, 0], (4, 6)), warp.identity_grid((4, 6), batch=3), 1e-7, "grid")


def test_apply_affine_to_the_identity_grid_is_affine_grid():
  theta = warp.make_affine_matrix(*_image((4, 2, 1)))[:, 0]
  grid = warp.apply_affine(theta, warp.identity_grid((5, 3), batch=2))
  assert_close(grid, warp.affine_grid(theta, (5, 3)), 1e-6, "apply_affine")


def test_compose_matches_sequential_warps_and_has_an_identity():
  a = warp.make_affine_matrix(*(0.2 * _image((4, 1, 1), seed=5)))[:, 0]
  b = warp.make_affine_matrix(*(0.2 * _image((4, 1, 1), seed=6)))[:, 0]
  outer, inner = warp.affine_grid(a, (16, 16)), warp.affine_grid(b, (12, 12))
  ident = warp.identity_grid(16)
  assert_close(warp.compose(ident, inner), inner, 1e-6, "identity outer")
  assert_close(warp.compose(outer, warp.identity_grid(16)), outer, 1e-6, "identity inner")
  # Where `inner` stays within outer's pixel centres, composing affine grids multiplies their matrices.
  expected = warp.apply_affine(a, inner)
  inside = np.all(np.abs(np.asarray(inner)) <= 15 / 16, axis=-1)
  err = np.abs(np.asarray(warp.compose(outer, inner)) - np.asarray(expected))[inside]
  assert inside.mean() > 0.3 and err.max() < 1e-5, err.max()


@pytest.mark.parametrize("scale", [2.0, 1.5, 0.5])
def test_resize_grid_keeps_an_identity_grid_in_the_interior(scale):
  """Bilinear interpolation is exact for a linear grid except where PyTorch clamps at the edges."""
  grid = warp.resize_grid(warp.identity_grid(8), scale_factor=scale)
  out = int(8 * scale)
  assert grid.shape == (1, out, out, 2)
  expected = warp.identity_grid(out)
  margin = max(1, int(scale))
  assert_close(
    grid[:, margin:-margin, margin:-margin], expected[:, margin:-margin, margin:-margin], 1e-6, f"resize x{scale}"
  )


def test_resize_grid_by_size_equals_resize_by_matching_scale():
  grid = 1.1 * jnp.tanh(_image((2, 6, 6, 2)))
  assert_close(warp.resize_grid(grid, out_hw=12), warp.resize_grid(grid, scale_factor=2.0), 0.0, "resize")


# ---------------------------------------------------------------------------------------------------------
# Convex upsampling and the out-of-bounds check.
# ---------------------------------------------------------------------------------------------------------


def test_convex_upsampling_of_a_constant_flow_is_the_scaled_constant_in_the_interior():
  factor, (h, w) = 4, (4, 5)
  flow = jnp.broadcast_to(jnp.array([0.3, -0.2]), (2, h, w, 2))
  up = warp.convex_upsample(flow, 3.0 * _image((2, h, w, 9 * factor * factor)), factor)
  assert up.shape == (2, h * factor, w * factor, 2)
  interior = up[:, factor:-factor, factor:-factor]  # Coarse cells whose 3x3 neighbourhood is inside.
  assert_close(interior, jnp.broadcast_to(factor * flow[0, 0, 0], interior.shape), 1e-6, "constant flow")


def test_convex_upsampling_mask_channel_layout():
  """Channel k*f*f + i*f + j weighs neighbour k (3x3 raster order) for output pixel (y*f + i, x*f + j)."""
  factor, h, w = 2, 3, 3
  flow = _image((1, h, w, 2))
  mask = np.full((1, h, w, 9 * factor * factor), -1e9, np.float32)
  k, i, j = 5, 1, 0  # Neighbour (dy, dx) = (0, +1) for sub-pixel (1, 0).
  mask[..., k * factor * factor + i * factor + j] = 0.0
  up = warp.convex_upsample(flow, jnp.asarray(mask), factor)
  assert_close(up[0, 1 * factor + i, 0 * factor + j], factor * flow[0, 1, 1], 1e-6, "layout")


def test_warp_exceeds_image_bounds():
  ident = warp.identity_grid(16, batch=1)
  zoom_out = 1.2 * ident
  oob = warp.warp_exceeds_image_bounds(jnp.concatenate([ident, zoom_out]))
  np.testing.assert_array_equal(np.asarray(oob), [False, True])
  # A landscape 50x100 image padded into the square: rows beyond |y| > (8-1)/16 are padding.
  bounds = jnp.array([[50, 100], [100, 100]])
  oob = warp.warp_exceeds_image_bounds(jnp.concatenate([ident, ident]), image_bounds=bounds)
  np.testing.assert_array_equal(np.asarray(oob), [True, False])


# ---------------------------------------------------------------------------------------------------------
# Tent downsampling and mipmap warping.
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [2, 3, 4])
def test_tent_downsampling_preserves_a_constant_image(stride):
  img = jnp.full((1, 24, 24, 2), 0.7)
  out = mipmap.bilinear_downsample(img, stride)
  pad = stride // 2
  assert out.shape[1] == (24 + 2 * pad - 2 * stride) // stride + 1
  assert_close(out, jnp.full(out.shape, 0.7), 1e-6, f"DC gain stride {stride}")


@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("size", [32, 24])
def test_mipmap_warp_with_an_identity_grid_is_plain_grid_sample(mode, size):
  img = _image((2, size, size, 3))
  grid = warp.identity_grid(size, batch=2)
  out, levels = mipmap.mipmap_warp(img, grid, mode, max_num_levels=3.5, return_levels=True)
  assert float(jnp.max(levels)) == 0.0
  assert_close(out, warp.grid_sample(img, grid, mode), 1e-6, f"mipmap identity/{mode}")


def test_mipmap_level_of_a_uniform_zoom_out():
  """A grid stepping d source pixels per output pixel samples level log2(d) (clamped to the range)."""
  size, out = 64, 8
  grid = warp.identity_grid(out)
  levels = mipmap.mipmap_levels(grid, (size, size), max_num_levels=8)
  step = (size - 1) * (2 / out) / 2  # Source-pixel distance between neighbouring samples.
  assert_close(levels, jnp.full(levels.shape, np.log2(step)), 1e-5, "uniform level")
  clamped = mipmap.mipmap_levels(grid, (size, size), max_num_levels=2.5)
  assert_close(clamped, jnp.full(levels.shape, 1.5), 0.0, "clamped level")


def test_mipmap_warp_jits_and_has_finite_gradients():
  img = _image((1, 32, 32, 3))
  grid = warp.affine_grid(jnp.array([[[2.5, 0.3, 0.1], [-0.2, 2.4, 0.0]]]), (8, 8))
  fn = jax.jit(lambda im, g: jnp.sum(mipmap.mipmap_warp(im, g, "reflection", max_num_levels=3.5) ** 2))
  d_img, d_grid = jax.grad(fn, argnums=(0, 1))(img, grid)
  assert np.isfinite(np.asarray(d_img)).all() and np.isfinite(np.asarray(d_grid)).all()
  assert float(jnp.abs(d_grid).max()) > 0.0


def _interpolate_reference(x: np.ndarray, out_size: int, scale: float, axis: int) -> np.ndarray:
  """PyTorch's bilinear align_corners=False rule along one axis: source (d + 0.5)/scale - 0.5, clamped."""
  n = x.shape[axis]
  src = np.maximum((np.arange(out_size) + 0.5) / scale - 0.5, 0.0)
  i0 = np.minimum(np.floor(src).astype(int), n - 1)
  i1 = np.minimum(i0 + 1, n - 1)
  lam = np.expand_dims(src - i0, [a for a in range(x.ndim) if a != axis])
  return np.take(x, i0, axis) * (1 - lam) + np.take(x, i1, axis) * lam


@pytest.mark.parametrize("scale", [2.0, 4.0, 8.0, 1.5, 0.5, 2.5])
def test_resize_bilinear_follows_pytorch_interpolate(scale):
  x = np.asarray(_image((2, 6, 4, 3)), np.float64)
  ho, wo = int(6 * scale), int(4 * scale)
  expected = _interpolate_reference(_interpolate_reference(x, ho, scale, 1), wo, scale, 2)
  actual = warp.resize_bilinear(jnp.asarray(x, jnp.float32), scale_factor=scale)
  assert_close(actual, expected, 1e-6, f"interpolate x{scale}", rtol=1e-6)


def test_mipmap_stack_depth_is_static_and_capped_by_the_input_size():
  """ceil(max_num_levels - 1) + 1 levels, but never past the 1-pixel level a small input reaches."""
  assert mipmap.num_stack_levels(3.5) == 4
  assert mipmap.num_stack_levels(3.5, min_level=4.2) == 6
  assert mipmap.num_stack_levels(8, size=(64, 64)) == 7
  assert mipmap.num_stack_levels(8, size=(48, 48)) == 7  # Padded to 64 first.
  img = _image((1, 8, 8, 2))
  grid = 20.0 * warp.identity_grid(4)  # Neighbours 35 px apart: level log2(35) > 3, where upstream raises.
  out, levels = mipmap.mipmap_warp(img, grid, max_num_levels=8, return_levels=True)
  assert float(levels.max()) == 3.0 and np.isfinite(np.asarray(out)).all()
