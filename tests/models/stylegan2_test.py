"""StyleGAN2 generator and discriminator: parity with the upstream PyTorch code, and specified behaviour.

Parity tests replay every recorded call of each `stylegan2_g` / `stylegan2_d` fixture (sizes, psi, inject
indices and inputs all read from the fixture) on weights converted from the fixture's `.pt` by our own reader
and converter. Tolerance: max abs error <= 1e-4 on images, latents and logits.
"""
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
  ckpt = fixtures.load_checkpoint(fx, fx.kind + ".pt")
  config, variables = convert.convert_generator(ckpt["g_ema"])
  return convert.build_generator(config, **overrides), variables


def _replay_generator(fx, G, v):
  """{output name: our value} for every output the fixture records."""
  a = {k: jnp.asarray(x) for k, x in fx.arrays.items()}
  out = {}
  const = dict(randomize_noise=False)
  out["w"] = G.apply(v, a["z"], method=G.mapping)
  out["img_z"], out["wplus_z"] = G.apply(v, a["z"], return_latents=True, **const)
  out["img_w"] = G.apply(v, a["w"], input_is_latent=True, **const)
  tl = out["trunc_latent"] = G.apply(v, a["z_mean_set"], method=G.mean_latent)
  for name in ("trunc_all", "trunc_first3"):
    kw = fixtures.call_kwargs(fx.call(f"img_{name}")["call"])
    out[f"img_{name}"], out[f"wplus_{name}"] = G.apply(
        v, a["z"], truncation=kw["truncation"], truncation_latent=tl, inject_index=kw["inject_index"],
        return_latents=True, **const)
  kw = fixtures.call_kwargs(fx.call("img_mix")["call"])
  out["img_mix"], out["wplus_mix"] = G.apply(v, [a["z"], a["z2"]], inject_index=kw["inject_index"],
                                             return_latents=True, **const)
  out["img_wplus"] = G.apply(v, a["wplus_in"], input_is_latent=True, **const)
  noise = [nchw_to_nhwc(n) for n in fx.sequence("noise_in")]
  out["img_noise"] = G.apply(v, a["z"], noise=noise)
  # ADA's fp16 pre-normalisation is cancelled by demodulation in fp32 (README): the plain path must match.
  out["img_fp16res"] = out["img_z"]
  out["img_fp16res_first_only"] = G.apply(v, a["z"][:1], **const)
  kw = fixtures.call_kwargs(fx.call("img_trunc_mix_rosinality")["call"])
  out["img_trunc_mix_rosinality"], out["wplus_trunc_mix_rosinality"] = G.apply(
      v, [a["z"], a["z2"]], truncation=kw["truncation"], truncation_latent=tl,
      inject_index=kw["inject_index"], truncation_mode="rosinality", return_latents=True, **const)
  return out


@pytest.mark.parity
@pytest.mark.parametrize("fx", fixtures.collect("stylegan2_g"))
def test_generator_matches_upstream_for_every_recorded_call(fx):
  G, v = _generator(fx)
  ours = _replay_generator(fx, G, v)
  outputs = [k for k, m in fx.meta["arrays"].items() if m["kind"] == "output"]
  missing = sorted(set(outputs) - set(ours))
  assert not missing, f"{fx.id}: recorded outputs this test does not replay: {missing}"
  for name in outputs:
    expected = fx[name]
    actual = np.asarray(ours[name])
    if expected.ndim == 4:
      expected = nchw_to_nhwc(expected)
    assert_close(actual, expected, ATOL, f"{fx.id}:{name}")


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
  models = convert.convert_checkpoint(fixtures.load_checkpoint(fx, fx.kind + ".pt"))
  _, config, v = models["d"]
  D = convert.build_discriminator(config)
  for call in fx.meta["calls"]:
    logits_name, feats_name = call["outputs"]
    x = jnp.asarray(nchw_to_nhwc(fx[logits_name.replace("d_out", "x")]))
    assert_close(D.apply(v, x), fx[logits_name], ATOL, f"{fx.id}:{logits_name}")
    assert_close(D.apply(v, x, method=D.features), nchw_to_nhwc(fx[feats_name]), ATOL, f"{fx.id}:{feats_name}")


# -- specified behaviour (no fixtures needed) -------------------------------------------------------------------

TINY = dict(size=16, style_dim=8, n_mlp=2, channels=((4, 8), (8, 8), (16, 4)))


@pytest.fixture(scope="module")
def tiny_g():
  G = stylegan2.Generator(**TINY)
  v = G.init(jax.random.PRNGKey(0), jnp.zeros((2, 8)), randomize_noise=False)
  return G, v


def test_layer_and_latent_counts_follow_the_size():
  for size, n_latent, n_noise in [(4, 2, 1), (32, 8, 7), (256, 14, 13), (1024, 18, 17)]:
    G = stylegan2.Generator(size=size)
    assert (G.n_latent, G.num_layers) == (n_latent, n_noise)
    assert len(stylegan2.noise_resolutions(size)) == n_noise
  with pytest.raises(ValueError, match="powers of two"):
    stylegan2.Generator(size=48).n_latent


def test_any_power_of_two_size_builds_and_generates(tiny_g):
  G, v = tiny_g
  img = G.apply(v, jnp.ones((3, 8)), randomize_noise=False)
  assert img.shape == (3, 16, 16, 3) and np.all(np.isfinite(img))
  assert set(v["noises"]) == {f"noise_{i}" for i in range(G.num_layers)}


def test_random_noise_changes_the_image_and_fixed_noise_does_not(tiny_g):
  G, v = tiny_g
  v = jax.tree_util.tree_map(lambda x: x, v)
  v["params"]["conv1"]["noise"]["weight"] = jnp.ones((1,))   # noise strength is 0 at init
  z = jnp.ones((1, 8))
  a = G.apply(v, z, rngs={"noise": jax.random.PRNGKey(1)})
  b = G.apply(v, z, rngs={"noise": jax.random.PRNGKey(2)})
  c1, c2 = (G.apply(v, z, randomize_noise=False) for _ in range(2))
  assert np.abs(a - b).max() > 1e-3
  np.testing.assert_array_equal(c1, c2)


def test_style_mixing_uses_the_first_style_below_the_inject_index(tiny_g):
  G, v = tiny_g
  z1, z2 = jax.random.normal(jax.random.PRNGKey(0), (2, 2, 8))
  _, lat = G.apply(v, [z1, z2], inject_index=2, randomize_noise=False, return_latents=True)
  w1, w2 = G.apply(v, z1, method=G.mapping), G.apply(v, z2, method=G.mapping)
  np.testing.assert_allclose(lat[:, :2], jnp.broadcast_to(w1[:, None], (2, 2, 8)), atol=1e-6)
  np.testing.assert_allclose(lat[:, 2:], jnp.broadcast_to(w2[:, None], (2, G.n_latent - 2, 8)), atol=1e-6)


def test_inject_index_may_be_random_and_traced_under_jit(tiny_g):
  G, v = tiny_g
  z = jax.random.normal(jax.random.PRNGKey(0), (2, 2, 8))
  f = jax.jit(lambda k: G.apply(v, [z[0], z[1]], randomize_noise=False, return_latents=True,
                                rngs={"mixing": k})[1])
  w1 = G.apply(v, z[0], method=G.mapping)
  for seed in range(4):
    lat = f(jax.random.PRNGKey(seed))
    n_first = int(np.sum(np.all(np.isclose(lat[0], w1[0]), axis=-1)))
    assert 1 <= n_first <= G.n_latent - 1


def test_truncation_with_psi_zero_gives_the_mean_latent_image(tiny_g):
  G, v = tiny_g
  z = jax.random.normal(jax.random.PRNGKey(3), (2, 8))
  tl = G.apply(v, z, method=G.mean_latent)
  _, lat = G.apply(v, z, truncation=0.0, truncation_latent=tl, inject_index=G.n_latent,
                   randomize_noise=False, return_latents=True)
  np.testing.assert_allclose(lat, jnp.broadcast_to(tl[:, None], lat.shape), atol=1e-6)
  with pytest.raises(ValueError, match="truncation_latent"):
    G.apply(v, z, truncation=0.5, randomize_noise=False)


def test_generator_is_differentiable_end_to_end(tiny_g):
  G, v = tiny_g
  loss = lambda p, z: jnp.mean(G.apply({**v, "params": p}, z, randomize_noise=False) ** 2)
  g = jax.grad(loss)(v["params"], jnp.ones((2, 8)))
  leaves = jax.tree_util.tree_leaves(g)
  assert all(np.all(np.isfinite(x)) for x in leaves)
  assert np.abs(g["convs_0"]["conv"]["weight"]).max() > 0


def test_discriminator_any_size_and_odd_batches_are_refused_by_stddev():
  D = stylegan2.Discriminator(size=16, channels=((4, 8), (8, 8), (16, 8)))
  x = jnp.zeros((4, 16, 16, 3))
  v = D.init(jax.random.PRNGKey(0), x)
  assert D.apply(v, x).shape == (4, 1)
  assert D.apply(v, x[:2]).shape == (2, 1)
  with pytest.raises(ValueError, match="not divisible"):
    D.apply(v, jnp.zeros((6, 16, 16, 3)))
