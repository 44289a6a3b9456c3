"""StyleGAN2 generator and discriminator: parity with the upstream PyTorch code, and specified behaviour.

Parity tests replay every recorded call of each `stylegan2_g` / `stylegan2_d` fixture (sizes, psi, inject
indices and inputs all read from the fixture) on weights converted from the fixture's `.pt` by our own reader
and converter. Tolerance: max abs error <= 1e-4 on images, latents and logits.
"""

import ast
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgeal.convert import stylegan2 as convert
from jaxgeal.models import stylegan2
from jaxgeal.ops import modulated_conv
from tests import fixtures
from tests.fixtures import assert_close, nchw_to_nhwc

ATOL = 1e-4


def _generator(fx, **overrides):
  ckpt = fixtures.load_checkpoint(fx, fx.checkpoint_file())
  config, variables = convert.convert_generator(ckpt["g_ema"])
  return stylegan2.generator_from_config(config, **overrides), variables


def _generator_calls(text: str) -> list[ast.Call]:
  """The generator calls in a recorded call string, in order: `G([z], ...)`, `G16([z[:1]], ...)[0]`; a call
  whose first argument is not a list of styles (e.g. `Generator(..., num_fp16_res=2)`) is a constructor."""
  calls = []
  for m in re.finditer(r"\b\w+\(", text):
    depth, end = 0, None
    for j in range(m.end() - 1, len(text)):
      depth += {"(": 1, ")": -1}.get(text[j], 0)
      if depth == 0:
        end = j + 1
        break
    if end is None:
      continue
    expr = ast.parse(text[m.start() : end], mode="eval").body
    if expr.args and isinstance(expr.args[0], ast.List):
      calls.append(expr)
  return calls


class _Replay:
  """Evaluates the recorded generator calls of a `stylegan2_g` fixture with our generator."""

  def __init__(self, fx, G, v):
    self.fx, self.G, self.v = fx, G, v
    self.ours = {}

  def value(self, node):
    """A call argument: a recorded array (images NCHW -> NHWC), a number, a slice of an array, or the list
    comprehension `[noise_in_i for i in range(num_layers)]` (the README's sequence convention)."""
    if isinstance(node, ast.Constant):
      return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
      return -self.value(node.operand)
    if isinstance(node, ast.Name):
      return self.array(node.id)
    if isinstance(node, ast.Slice):
      return slice(*(None if e is None else self.value(e) for e in (node.lower, node.upper, node.step)))
    if isinstance(node, ast.Subscript):
      return self.value(node.value)[self.value(node.slice)]
    if isinstance(node, ast.ListComp) and isinstance(node.elt, ast.Name):
      prefix = node.elt.id.rsplit("_", 1)[0]
      seq = [jnp.asarray(nchw_to_nhwc(x) if x.ndim == 4 else x) for x in self.fx.sequence(prefix)]
      assert len(seq) == self.G.num_layers, f"{self.fx.id}: {len(seq)} {prefix}_i arrays for {self.G.num_layers} layers"
      return seq
    if isinstance(node, ast.List):
      return [self.value(e) for e in node.elts]
    raise NotImplementedError(f"{self.fx.id}: cannot evaluate {ast.unparse(node)!r}")

  def array(self, name):
    meta = self.fx.meta["arrays"][name]
    if meta["kind"] != "output":
      x = self.fx[name]
      return jnp.asarray(nchw_to_nhwc(x) if x.ndim == 4 else x)
    if name not in self.ours:
      # An output used as an argument that no call produces: the truncation latent, G.style(<set>).mean(0).
      m = re.search(r"G\.style\((\w+)\)\.mean\(0", meta["meaning"])
      assert m, f"{self.fx.id}: do not know how to compute {name}: {meta['meaning']!r}"
      self.ours[name] = self.G.apply(self.v, self.array(m.group(1)), method=self.G.mapping).mean(0, keepdims=True)
    return self.ours[name]

  def run(self, call: ast.Call, rosinality: bool) -> list:
    kw = {k.arg: self.value(k.value) for k in call.keywords}
    styles = self.value(call.args[0])
    if kw.pop("mapping_only", False):
      return [self.G.apply(self.v, styles[0], method=self.G.mapping)]
    kw.pop("num_fp16_res", None)  # fp16 pre-normalisation: cancelled by demodulation in fp32 (README)
    if rosinality:
      kw["truncation_mode"] = "rosinality"
    out = self.G.apply(self.v, styles, **kw)
    return list(out) if kw.get("return_latents") else [out]

  def replay(self) -> dict:
    for call in self.fx.meta["calls"]:
      results = []
      for expr in _generator_calls(call["call"]):
        results += self.run(expr, rosinality=call["call"].startswith("rosinality"))
      assert len(results) >= len(call["outputs"]), f"{self.fx.id}: {call['call']!r} gives {len(results)} values"
      self.ours.update(zip(call["outputs"], results))
    return self.ours


@pytest.mark.parity
@pytest.mark.parametrize("impl", modulated_conv.IMPLS)
@pytest.mark.parametrize("fx", fixtures.collect("stylegan2_g"))
def test_every_modulated_conv_implementation_matches_upstream(fx, impl):
  G, v = _generator(fx, modconv_impl=impl)
  img = G.apply(v, jnp.asarray(fx["z"]), randomize_noise=False)
  assert_close(img, nchw_to_nhwc(fx["img_z"]), ATOL, f"{fx.id}:img_z[{impl}]")


@pytest.mark.parity
@pytest.mark.parametrize("fx", fixtures.collect("stylegan2_d"))
def test_discriminator_matches_upstream(fx):
  models = convert.convert_checkpoint(fixtures.load_checkpoint(fx, fx.checkpoint_file()))
  _, config, v = models["d"]
  D = stylegan2.discriminator_from_config(config)
  for call in fx.meta["calls"]:
    # e.g. "D(x_b4); D.convs(x_b4)": one output per expression, D(x) the logits, D.convs(x) the features.
    exprs = [ast.parse(e.strip(), mode="eval").body for e in call["call"].split(";")]
    assert len(exprs) == len(call["outputs"]), f"{fx.id}: {call['call']!r} vs outputs {call['outputs']}"
    for expr, name in zip(exprs, call["outputs"]):
      x = jnp.asarray(nchw_to_nhwc(fx[expr.args[0].id]))
      method = {"D": None, "D.convs": D.features}[ast.unparse(expr.func)]
      expected = fx[name] if fx[name].ndim != 4 else nchw_to_nhwc(fx[name])
      assert_close(D.apply(v, x, method=method), expected, ATOL, f"{fx.id}:{name}")


# -- specified behaviour (no fixtures needed) -------------------------------------------------------------------

TINY = dict(size=16, style_dim=8, n_mlp=2, channels=((4, 8), (8, 8), (16, 4)))


@pytest.fixture(scope="module")
def tiny_g():
  G = stylegan2.Generator(**TINY)
  v = jax.jit(lambda key, z: G.init(key, z, randomize_noise=False))(jax.random.PRNGKey(0), jnp.zeros((2, 8)))
  return G, v


def test_layer_and_latent_counts_follow_the_size():
  for size, n_latent, n_noise in [(4, 2, 1), (32, 8, 7), (256, 14, 13), (1024, 18, 17)]:
    G = stylegan2.Generator(size=size)
    assert (G.n_latent, G.num_layers) == (n_latent, n_noise)
    assert len(stylegan2.noise_resolutions(size)) == n_noise
  with pytest.raises(ValueError, match="powers of two"):
    _ = stylegan2.Generator(size=48).n_latent


def test_any_power_of_two_size_builds_and_generates(tiny_g):
  G, v = tiny_g
  img = jax.jit(lambda v, z: G.apply(v, z, randomize_noise=False))(v, jnp.ones((3, 8)))
  assert img.shape == (3, 16, 16, 3) and np.all(np.isfinite(img))
  assert set(v["noises"]) == {f"noise_{i}" for i in range(G.num_layers)}


def test_random_noise_changes_the_image_and_fixed_noise_does_not(tiny_g):
  G, v = tiny_g
  v = jax.tree_util.tree_map(lambda x: x, v)
  v["params"]["conv1"]["noise"]["weight"] = jnp.ones((1,))  # noise strength is 0 at init
  z = jnp.ones((1, 8))
  # Jitted (here and below): one compile per call, not one per operation.
  noisy = jax.jit(lambda v, key: G.apply(v, z, rngs={"noise": key}))
  a, b = noisy(v, jax.random.PRNGKey(1)), noisy(v, jax.random.PRNGKey(2))
  c1, c2 = (jax.jit(lambda v: G.apply(v, z, randomize_noise=False))(v) for _ in range(2))
  assert np.abs(a - b).max() > 1e-3
  np.testing.assert_array_equal(c1, c2)


def test_style_mixing_uses_the_first_style_below_the_inject_index(tiny_g):
  G, v = tiny_g
  z1, z2 = jax.random.normal(jax.random.PRNGKey(0), (2, 2, 8))
  _, lat = jax.jit(lambda v: G.apply(v, [z1, z2], inject_index=2, randomize_noise=False, return_latents=True))(v)
  mapping = jax.jit(lambda v, z: G.apply(v, z, method=G.mapping))
  w1, w2 = mapping(v, z1), mapping(v, z2)
  np.testing.assert_allclose(lat[:, :2], jnp.broadcast_to(w1[:, None], (2, 2, 8)), atol=1e-6)
  np.testing.assert_allclose(lat[:, 2:], jnp.broadcast_to(w2[:, None], (2, G.n_latent - 2, 8)), atol=1e-6)


def test_inject_index_may_be_random_and_traced_under_jit(tiny_g):
  G, v = tiny_g
  z = jax.random.normal(jax.random.PRNGKey(0), (2, 2, 8))
  f = jax.jit(lambda k: G.apply(v, [z[0], z[1]], randomize_noise=False, return_latents=True, rngs={"mixing": k})[1])
  w1 = G.apply(v, z[0], method=G.mapping)
  for seed in range(4):
    lat = f(jax.random.PRNGKey(seed))
    n_first = int(np.sum(np.all(np.isclose(lat[0], w1[0]), axis=-1)))
    assert 1 <= n_first <= G.n_latent - 1


def test_truncation_with_psi_zero_gives_the_mean_latent_image(tiny_g):
  G, v = tiny_g
  z = jax.random.normal(jax.random.PRNGKey(3), (2, 8))
  tl = jax.jit(lambda v: G.apply(v, z, method=G.mean_latent))(v)
  _, lat = jax.jit(
    lambda v, tl: G.apply(
      v, z, truncation=0.0, truncation_latent=tl, inject_index=G.n_latent, randomize_noise=False, return_latents=True
    )
  )(v, tl)
  np.testing.assert_allclose(lat, jnp.broadcast_to(tl[:, None], lat.shape), atol=1e-6)
  with pytest.raises(ValueError, match="truncation_latent"):
    G.apply(v, z, truncation=0.5, randomize_noise=False)


def test_generator_is_differentiable_end_to_end(tiny_g):
  G, v = tiny_g
  loss = lambda p, z: jnp.mean(G.apply({**v, "params": p}, z, randomize_noise=False) ** 2)
  g = jax.jit(jax.grad(loss))(v["params"], jnp.ones((2, 8)))  # jitted: one compile, not one per operation
  leaves = jax.tree_util.tree_leaves(g)
  assert all(np.all(np.isfinite(x)) for x in leaves)
  assert np.abs(g["convs_0"]["conv"]["weight"]).max() > 0


def test_discriminator_any_size_and_odd_batches_are_refused_by_stddev():
  D = stylegan2.Discriminator(size=16, channels=((4, 8), (8, 8), (16, 8)))
  x = jnp.zeros((4, 16, 16, 3))
  v = jax.jit(D.init)(jax.random.PRNGKey(0), x)  # jitted: one compile per shape, not one per operation
  apply = jax.jit(D.apply)
  assert apply(v, x).shape == (4, 1)
  assert apply(v, x[:2]).shape == (2, 1)
  with pytest.raises(ValueError, match="not divisible"):
    apply(v, jnp.zeros((6, 16, 16, 3)))
