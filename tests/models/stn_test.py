"""Spatial transformers (GANgealing §3.1-3.2, appendix B.1-B.5): parity with upstream, and properties.

Parity replays every recorded call of each `stn` fixture (root: K = 1, supersize 128; multihead/: K = 3,
reflection, iters 2, score-tensor warp policies) through our modules, built from the fixture's own checkpoint
by our converter. Calls, their arguments (sizes, padding modes, iterations, alphas, policies, image bounds)
and inputs are parsed from the json / npz, never hard-coded; each distinct static configuration is jitted
once. Tolerance 1e-4 abs on images, grids, flows and matrices, 1e-4 relative on the flip decision's TV values;
boolean flags (out of bounds, flips) exactly. Observed max abs errors (run with -s to print them): images
3.3e-5 (output_resolution 128), grids 1.5e-6, residual flows 1e-7, matrices 7e-7, TV 3e-7 relative.
The key-point outputs (congeal / uncongeal / transfer) belong to `jaxgeal.ops.points` and its tests: the parity
test skips exactly those (listed by name below) and asserts that every other recorded output was compared;
`test_point_outputs_through_our_stn` then closes them end to end with our warps of x and xB (the point tests
can only use the warps the fixture records, i.e. those of x): indices exact, points within 5e-5 px.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgeal import xla_cpu
from jaxgeal.convert import gangealing
from jaxgeal.losses.gangealing import total_variation_loss
from jaxgeal.models import cluster_classifier as cc
from jaxgeal.models import stn as stn_lib
from jaxgeal.ops import mipmap, warp
from tests import fixtures
from tests.fixtures import assert_close, collect

ATOL = 1e-4
# Key-point outputs, replayed by the tests of jaxgeal.ops.points (plus `transferred_points_res<N>` variants).
POINT_OUTPUTS = {
  "congealed_points",
  "uncongealed_points",
  "transferred_points",
  "sim_congealed_points",
  "sim_uncongealed_points",
  "sim_transferred_points",
}


def _is_point_output(name: str) -> bool:
  return name in POINT_OUTPUTS or re.fullmatch(r"transferred_points_res\d+", name) is not None


# ---------------------------------------------------------------------------------------------------------
# Replaying recorded calls.
# ---------------------------------------------------------------------------------------------------------


def _split_top(text: str, sep: str = ",") -> list[str]:
  """Splits on `sep` outside parentheses / brackets."""
  parts, depth, cur = [], 0, ""
  for ch in text:
    depth += ch in "([" and 1 or 0
    depth -= ch in ")]" and 1 or 0
    if ch == sep and depth == 0:
      parts.append(cur.strip())
      cur = ""
    else:
      cur += ch
  return parts + ([cur.strip()] if cur.strip() else [])


class Replayer:
  """Our modules for one fixture and a cache of jitted callables keyed by static configuration."""

  def __init__(self, fx, compiler_options: dict | None = None):
    self.fx, self.compiler_options = fx, compiler_options
    ckpt = fixtures.load_checkpoint(fx, fx.checkpoint_file())
    self.config, self.variables = gangealing.convert_stn(ckpt["t_ema"])
    self.k = self.config["num_heads"]
    arch = {k: self.config[k] for k in stn_lib.ARCH_KEYS if k in self.config}
    params = self.variables["params"]
    self.targets = {  # name in the recorded call -> (module, its variables)
      "t_ema": (stn_lib.from_config(self.config), self.variables),
      "t_ema.stns[0]": (stn_lib.build_stn(self.config["transforms"][0], **arch), {"params": params["stns_0"]}),
      "t_ema.stns[1]": (stn_lib.build_stn(self.config["transforms"][1], **arch), {"params": params["stns_1"]}),
    }
    self.targets["t_ema.forward_with_flip"] = self.targets["t_ema"]
    # congeal_points(return_full=True) also returns the forward's image and residual flow: replayed as forward.
    self.targets["t_ema.congeal_points"] = self.targets["t_ema"]
    self._jitted = {}
    self.compiles = 0

  def value(self, text: str):
    """An argument of a recorded call: a literal, a fixture array or one of the few expressions used."""
    a = self.fx.arrays
    b = a["x"].shape[0]
    if text in ("True", "False"):
      return text == "True"
    if re.fullmatch(r"-?\d+", text):
      return int(text)
    if re.fullmatch(r"-?\d*\.\d*", text):
      return float(text)
    if re.fullmatch(r"\"\w+\"|'\w+'", text):
      return text[1:-1]
    m = re.fullmatch(r"(\w+)\[:(\d+)\]", text)
    if m:
      return a[m.group(1)][: int(m.group(2))]
    m = re.fullmatch(r"(\w+)\.repeat_interleave\(K, 0\)", text)
    if m:
      return np.repeat(a[m.group(1)], self.k, axis=0)
    if text == "eye(K).repeat(B, 1)":
      return np.tile(np.eye(self.k, dtype=np.float32), (b, 1))
    if text in a:
      return a[text]
    raise ValueError(f"{self.fx.id}: cannot evaluate recorded argument {text!r}")

  def statement(self, stmt: str):
    """(target name, positional input, kwargs) of one `t_ema...(...)` statement."""
    stmt = stmt.split("#")[0].strip()
    m = re.fullmatch(r"(t_ema(?:\.stns\[\d\]|\.forward_with_flip|\.congeal_points)?)\((.*)\)", stmt)
    assert m, f"{self.fx.id}: unrecognised recorded statement {stmt!r}"
    args = _split_top(m.group(2))
    positional = [a for a in args if "=" not in a]
    # congeal_points' key points (2nd positional) do not affect the forward outputs replayed here.
    assert len(positional) == 1 or m.group(1).endswith("congeal_points"), f"unexpected arguments in {stmt!r}"
    kwargs = {}
    for arg in args[len(positional) :]:
      name, text = arg.split("=", 1)
      kwargs[name.strip()] = self.value(text.strip())
    return m.group(1), self.value(args[0]), kwargs

  def run(self, target: str, x, kwargs: dict):
    """Runs a statement; returns STNOutput / FlipOutput with NHWC images (and unfolds if asked)."""
    kwargs = {k: v for k, v in kwargs.items() if not k.startswith("return_")}
    if target.endswith("congeal_points"):
      target = "t_ema"
    unfold = kwargs.pop("unfold", False)
    static = {k: v for k, v in kwargs.items() if not isinstance(v, np.ndarray)}
    arrays = {k: jnp.asarray(_to_nhwc(v)) for k, v in kwargs.items() if isinstance(v, np.ndarray)}
    key = (target, tuple(sorted(static.items())), tuple(sorted(arrays)), np.shape(x))
    if key not in self._jitted:
      module, variables = self.targets[target]
      method = module.forward_with_flip if target.endswith("forward_with_flip") else module.__call__
      fn = jax.jit(
        lambda v, x, arrs: module.apply(v, x, **static, **arrs, method=method), compiler_options=self.compiler_options
      )
      self._jitted[key] = functools.partial(fn, variables)
      self.compiles += 1
    out = self._jitted[key](jnp.asarray(_to_nhwc(x)), arrays)
    return out.unfold(self.k) if unfold else out


def _to_nhwc(a):
  """Upstream images (N, 3, H, W) / unfolded (B, K, 3, H, W) -> channels last; other arrays unchanged."""
  a = np.asarray(a)
  if a.ndim >= 4 and a.shape[-3] == 3 and a.shape[-1] != 2:
    return np.moveaxis(a, -3, -1)
  return a


def _pick(name: str, out):
  """Our value for a recorded output, by the output's role (its name and the fixture's meaning)."""
  if isinstance(out, stn_lib.FlipOutput):
    roles = {
      "flip_out": out.output.image,
      "flip_warp": out.output.grid,
      "flip_flow": out.output.flow,
      "flip_inputs": out.inputs,
      "flip_indices": out.flipped,
      "flip_tv": out.tv,
      "flip_tvF": out.tv_flipped,
    }
    return roles[name]
  m = re.fullmatch(r"inter_(img|warp)_(\d+)", name)
  if m:
    stage = out.intermediates[int(m.group(2))]
    return stage.image if m.group(1) == "img" else stage.grid
  if name == "sim_out":
    return out.intermediates[0].image
  for prefix, field in (
    ("out_", "image"),
    ("congeal_full_img", "image"),
    ("grid", "grid"),
    ("delta_flow", "flow"),
    ("congeal_full_warp", "flow"),
    ("sim_matrix", "matrix"),
  ):
    if name.startswith(prefix):
      return getattr(out, field)
  if name.endswith("oob") or "_oob_" in name:
    return out.oob
  raise KeyError(f"no role known for recorded output {name!r}")


@functools.cache
def _replayer(fx_id: str, compiled_as: str = "xla_defaults") -> Replayer:
  (fx,) = [p.values[0] for p in collect("stn") if p.values[0] is not None and p.values[0].id == fx_id]
  return Replayer(fx, xla_cpu.compiler_options() if compiled_as == "aligner" else None)


@pytest.mark.parity
@pytest.mark.parametrize("compiled_as", ["xla_defaults", "aligner"])
@pytest.mark.parametrize("fx", collect("stn"))
def test_stn_parity(fx, compiled_as):
  """Every recorded output, compiled as the trainers compile (XLA's defaults) and as `Aligner` congeals
  (jaxgeal.xla_cpu's options: the same tolerances)."""
  rp = _replayer(fx.id, compiled_as)
  checked, skipped, errors, failures = set(), set(), {}, []
  for call in fx.meta["calls"]:
    outputs = [o for o in call["outputs"] if not _is_point_output(o)]
    skipped.update(o for o in call["outputs"] if _is_point_output(o))
    if not outputs:
      continue
    statements = [s for s in _split_top(call["call"], ";") if s.startswith("t_ema")]
    results = [rp.run(*rp.statement(s)) for s in statements]
    sim_alone = [r for s, r in zip(statements, results) if s.startswith("t_ema.stns[0]")]
    for name in outputs:
      # A composed call followed by the similarity STN alone: the matrix comes from the latter.
      out = sim_alone[0] if name.startswith("sim_matrix") and sim_alone else results[0]
      ours, expected = np.asarray(_pick(name, out)), _to_nhwc(fx[name])
      dtype = fx.meta["arrays"][name].get("upstream_dtype", "")
      if dtype.startswith("bool"):
        ours = ours.reshape(expected.shape)
        errors[name] = int(np.sum(ours != expected.astype(bool)))
        if errors[name]:
          failures.append(f"{name}: {errors[name]} flags differ: ours {ours.ravel()}, upstream {expected.ravel()}")
      else:
        # TV values are ~1e-5 here: an absolute 1e-4 would be vacuous, so they are held to 1e-4 relative.
        atol, rtol = (0.0, 1e-4) if name.startswith("flip_tv") else (ATOL, 0.0)
        try:
          errors[name] = assert_close(ours, expected, atol, name, rtol=rtol)
        except AssertionError as e:
          failures.append(str(e))
      checked.add(name)
  print(
    f"\n{fx.id}: {rp.compiles} compiled configurations; max abs errors:",
    {k: f"{v:.1e}" if isinstance(v, float) else v for k, v in sorted(errors.items())},
  )
  print(f"{fx.id}: left to the point tests: {sorted(skipped)}")
  recorded = {o for c in fx.meta["calls"] for o in c["outputs"]}
  assert recorded == checked | skipped, f"unchecked outputs: {sorted(recorded - checked - skipped)}"
  assert skipped == {o for o in recorded if _is_point_output(o)}
  assert not failures, "\n".join(failures)


@pytest.mark.parity
@pytest.mark.parametrize("fx", collect("stn"))
def test_point_outputs_through_our_stn(fx):
  """The recorded key-point outputs, from our STN's warps of x and xB and the pure point ops.

  `jaxgeal.ops.points` is specified by its own tests from the warps the fixtures record for x; the outputs
  that need xB's warps (not recorded) are closed here, with our STN's warps. Congealed indices must match
  exactly (the fixture's nearest-neighbour margins are far above our warp errors), points to 1e-3 px.
  """
  P = pytest.importorskip("jaxgeal.ops.points")
  rp = _replayer(fx.id)
  a = fx.arrays
  s, fs = a["x"].shape[-1], rp.config["flow_size"]
  ours = {}
  for call in fx.meta["calls"]:
    names = [o for o in call["outputs"] if _is_point_output(o)]
    if not names:
      continue
    kw = {}
    if "warp_policy=cluster_scores" in call["call"]:
      kw["warp_policy"] = a["cluster_scores"]
    res = fixtures.call_kwargs(call["call"]).get("output_resolution")
    fwd_a, fwd_b = rp.run("t_ema", a["x"], kw), rp.run("t_ema", a["xB"], kw)
    for name in names:
      if name == "congealed_points":
        ours[name] = P.congeal_points_composed(fwd_a.matrix, fwd_a.flow, a["pointsA"], s)
      elif name == "uncongealed_points":
        ours[name] = P.uncongeal_points(fwd_b.grid, a["points_congealed"], s, fs, normalize_input_points=True)
      elif name.startswith("transferred_points"):
        grid_b = rp.run("t_ema", a["xB"], dict(kw, output_resolution=res)).grid if res else fwd_b.grid
        ours[name] = P.transfer_points(fwd_a.matrix, fwd_a.flow, grid_b, a["pointsA"], s, output_resolution=res)
      elif name == "sim_congealed_points":  # The composed STN's first stage is the similarity STN alone.
        ours[name] = P.congeal_points_similarity(fwd_a.matrix, a["pointsA"], s, unnormalize_output_points=True)
      elif name == "sim_uncongealed_points":
        pts = a["points_congealed"] * (s - 1) / (fs - 1)
        ours[name] = P.uncongeal_points_similarity(fwd_b.matrix, pts, s, normalize_input_points=True)
      elif name == "sim_transferred_points":
        ours[name] = P.transfer_points_similarity(fwd_a.matrix, fwd_b.matrix, a["pointsA"], s)
  assert set(ours) == {o for c in fx.meta["calls"] for o in c["outputs"] if _is_point_output(o)}
  errors = {}
  for name, value in sorted(ours.items()):
    if fx.meta["arrays"][name].get("upstream_dtype", "").startswith("int"):
      assert np.array_equal(np.asarray(value), fx[name]), name
      errors[name] = 0
    else:
      errors[name] = assert_close(value, fx[name], 1e-3, name)
  print(f"\n{fx.id}: point outputs through our STN, max abs error (px):", {k: f"{v:.1e}" for k, v in errors.items()})


# ---------------------------------------------------------------------------------------------------------
# Properties of fresh models (self-contained; each test compiles one function).
# ---------------------------------------------------------------------------------------------------------

SMALL = ((4, 16), (8, 16), (16, 16), (32, 16), (64, 8))


@functools.cache
def _fresh():
  """A fresh 2-head composed STN (64 from 128), its variables, input and output, from one jitted init."""
  stn = stn_lib.ComposedSTN(flow_size=64, supersize=128, channels=SMALL, num_heads=2)
  x = jax.random.uniform(jax.random.PRNGKey(1), (2, 128, 128, 3), minval=-1.0, maxval=1.0)

  @jax.jit
  def init(key, x):
    out, variables = stn.init_with_output(key, x)
    resampled = mipmap.mipmap_warp(x, warp.identity_grid(64, 2), "border", max_num_levels=stn_lib.MAX_NUM_LEVELS)
    return out, variables, resampled

  # An RBG key: threefry-based parameter initialisation takes several times longer to compile on CPU.
  out, variables, resampled = init(jax.random.key(0, impl="rbg"), x)
  return stn, variables, x, out, resampled


def test_fresh_init_is_identity_warp():
  """B.5: zero-initialised heads give the identity: the output is the input resampled at flow_size."""
  stn, _, _, out, resampled = _fresh()
  k = stn.num_heads
  assert out.image.shape == (2 * k, 64, 64, 3)  # Cartesian policy: B*K rows, image-major.
  assert_close(out.grid, warp.identity_grid(64, 2 * k), 1e-6, "grid")
  assert_close(out.flow, np.zeros((2 * k, 64, 64, 2)), 0.0, "residual flow")
  assert_close(out.matrix, np.tile(np.eye(2, 3), (2 * k, 1, 1)), 1e-7, "matrix")
  assert_close(out.image, np.repeat(resampled, k, axis=0), 1e-5, "image")
  assert_close(out.intermediates[0].image, out.image, 1e-5, "similarity stage image")
  assert not np.any(out.oob)


def test_identity_at_flow_size_returns_input():
  """A fresh similarity STN on a flow_size input samples pixel centres: the input itself (also iterated)."""
  stn = stn_lib.SpatialTransformer("similarity", flow_size=32, channels=SMALL[:4])
  x = jax.random.uniform(jax.random.PRNGKey(2), (2, 32, 32, 3))
  out, _ = jax.jit(lambda x: stn.init_with_output(jax.random.PRNGKey(0), x, iters=2))(x)
  assert_close(out.image, x, 1e-5, "identity warp of a flow_size input")
  assert len(out.intermediates) == 2


def test_forward_with_flip_selection():
  """B.4 selection rule on stub outputs: smaller TV wins, ties keep x, x of the mirrored grid is negated."""
  n, s = 3, 8
  x = jnp.arange(n * s * s * 3, dtype=jnp.float32).reshape(n, s, s, 3)
  rough = jnp.zeros((n, s, s, 2)).at[:, ::2].set(0.5)  # TV > 0.

  def forward(img, input_img_for_sampling=None):
    mirrored = jnp.all(img == stn_lib.mirror(x), axis=(1, 2, 3))  # Which rows got the mirrored input.
    # Row 0: smoother when mirrored; row 1: smoother unmirrored; row 2: both flat (a tie).
    smooth = jnp.array([True, False, True]) == mirrored
    flow = jnp.where((smooth | (jnp.arange(n) == 2))[:, None, None, None], 0.0, rough)
    grid = warp.identity_grid(s, n) + 0.1
    return stn_lib.STNOutput(image=img, grid=grid, flow=flow, matrix=jnp.zeros((n, 2, 3)), oob=jnp.zeros((n,), bool))

  out = stn_lib._forward_with_flip(forward, x)
  assert np.array_equal(out.flipped, [True, False, False])
  assert_close(out.inputs, jnp.where(out.flipped[:, None, None, None], x[:, :, ::-1], x), 0.0, "inputs")
  assert_close(out.output.image, out.inputs, 0.0, "image")
  grid = warp.identity_grid(s, n) + 0.1
  assert_close(out.output.grid[0], grid[0] * jnp.array([-1.0, 1.0]), 0.0, "mirrored grid")
  assert_close(out.output.grid[1:], grid[1:], 0.0, "unmirrored grid")
  assert out.tv[2] == out.tv_flipped[2] == 0.0


def _perturb(variables, scale=0.05):
  """Random non-zero heads, so that warps and gradients are not trivially the identity / zero."""
  leaves, tree = jax.tree_util.tree_flatten(variables)
  keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
  noisy = [leaf + scale * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)]
  return jax.tree_util.tree_unflatten(tree, noisy)


def test_jit_grad():
  """Gradients reach both warp heads and the trunks through the anti-aliased sampler; all finite."""
  stn, variables, x, _, _ = _fresh()
  scores = jnp.array([[0.1, 2.0], [3.0, -1.0]])

  @jax.jit
  def loss_and_grad(v):
    def loss(v):
      out = stn.apply(v, x, padding_mode="reflection", output_resolution=48, warp_policy=scores, alpha=0.7)
      return jnp.mean(out.image**2) + total_variation_loss(out.flow)

    return jax.value_and_grad(loss)(v)

  value, grads = loss_and_grad(_perturb(variables))
  assert np.isfinite(value)
  g = grads["params"]
  for path, leaf in jax.tree_util.tree_leaves_with_path(g):
    assert np.all(np.isfinite(leaf)) and np.abs(leaf).max() > 0, jax.tree_util.keystr(path)


def test_predict_similarity_is_the_first_stage_matrix():
  """predict_similarity (what the equivariance loss reads) = the similarity stage's matrices of a full run,
  all K heads per image; a flow-only STN has none."""
  stn, variables, x, _, _ = _fresh()
  v = _perturb(variables)
  out = jax.jit(lambda v, x: stn.apply(v, x))(v, x)
  m = jax.jit(lambda p, x: stn_lib.predict_similarity(stn, p, x))(v["params"], x)
  assert m.shape == (2, 2, 2, 3)
  assert_close(m.reshape(4, 2, 3), out.intermediates[0].matrix, 1e-6, "first stage matrices")
  with pytest.raises(ValueError, match="similarity"):
    stn_lib.predict_similarity(stn_lib.SpatialTransformer("flow", flow_size=32, channels=SMALL), {}, x)


def test_cartesian_rows_equal_per_head_policies():
  """Row b*K + k of the cartesian policy is image b warped by head k, also through iterations and alpha
  (which upstream only supports with a score policy)."""
  stn, variables, x, _, _ = _fresh()
  k = stn.num_heads

  @jax.jit
  def run(v):
    kw = dict(iters=2, alpha=0.6, padding_mode="zeros")
    per_head = [stn.apply(v, x, warp_policy=jax.nn.one_hot(jnp.full((2,), h), k), **kw) for h in range(k)]
    return stn.apply(v, x, **kw), per_head

  cart, per_head = run(_perturb(variables))
  for h in range(k):
    for field in ("image", "grid", "flow", "matrix"):
      assert_close(getattr(cart, field)[h::k], getattr(per_head[h], field), 1e-4, f"head {h} {field}")
  unfolded = cart.unfold(k)
  assert unfolded.image.shape == (2, k, 64, 64, 3) and unfolded.matrix.shape == (2, k, 2, 3)


# ---------------------------------------------------------------------------------------------------------
# Cluster classifier (§3.2): shapes and initialisation from the similarity STN.
# ---------------------------------------------------------------------------------------------------------


def test_cluster_classifier_init_from_stn():
  stn, variables, x, _, _ = _fresh()
  k = stn.num_heads
  clf = cc.ResnetClassifier(size=64, num_classes=2 * k, supersize=128, channels=SMALL)

  @jax.jit
  def run(params, stn_params):
    params = cc.init_from_stn(params, stn_params)
    return params, clf.apply({"params": params}, x)

  params = jax.eval_shape(clf.init, jax.random.PRNGKey(5), x)["params"]
  params = jax.tree_util.tree_map(lambda s: jax.random.normal(jax.random.PRNGKey(6), s.shape), params)
  params, logits = run(params, variables["params"])
  for name in params:
    if name != "to_logits":
      same = jax.tree_util.tree_map(np.array_equal, params[name], variables["params"]["stns_0"][name])
      assert jax.tree_util.tree_all(same), name
  assert logits.shape == (2, 2 * k)
  mirrored, classes, flipped = cc.run_flip(x, logits, num_clusters=k)
  assert np.array_equal(np.asarray(flipped), np.asarray(classes) >= k)
  assert_close(mirrored, jnp.where(flipped[:, None, None, None], x[:, :, ::-1], x), 0.0, "run_flip")
  inputs, policy = cc.run_flip_cartesian(x, logits, num_clusters=k)
  assert inputs.shape == (2 * k, 128, 128, 3) and policy.shape == (2 * k, k)
  # The logits drive the STN directly: head = argmax mod K.
  assert np.array_equal(np.asarray(stn_lib.head_indices(logits, k)), np.asarray(classes) % k)
  with pytest.raises(ValueError):
    cc.init_from_stn(params, {"stns_0": {"convs_0": {}}})
