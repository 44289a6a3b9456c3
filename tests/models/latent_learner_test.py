"""The learned congealing target (GANgealing §3.1, §3.2, appendix B): parity with upstream, and properties.

Parity replays every output of each `latent_learner` fixture (root: K = 1; multihead/: K = 3). The latent
learner and generator come from the checkpoint the json names (converted by our own reader); its
constructor arguments (inject index, n_latent) from that checkpoint's json (`constructor.ll.call`); psi
values, k-means++ arguments and draws from the recorded calls. Tolerance 1e-4 max abs on everything.

PCA: upstream fits sklearn's IncrementalPCA, whose rank-N truncation after each batch is an approximation of
PCA whenever the pool spans more than one batch (5 * D rows). method="incremental" reproduces it; the default
exact method is compared with a float64 SVD and its distance to upstream is printed (run with -s).
"""

import json
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgeal.convert import gangealing
from jaxgeal.convert import state_dict as sdc
from jaxgeal.convert import stylegan2 as convert_g
from jaxgeal.models import latent_learner as ll_lib
from jaxgeal.models import stylegan2
from tests import fixtures
from tests.fixtures import assert_close, nchw_to_nhwc

ATOL = 1e-4


def _mse(a, b):
  """The fixtures' k-means stand-in distance: per-image mean squared error."""
  return jnp.mean((a - b) ** 2, axis=(1, 2, 3))


def _up_to_sign(actual, expected, axis):
  """Flips each row (axis=1) / column (axis=0) of `actual` to the sign that best matches `expected`."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  same = np.abs(actual - expected).max(axis=axis, keepdims=True)
  flipped = np.abs(actual + expected).max(axis=axis, keepdims=True)
  return np.where(same <= flipped, actual, -actual)


def _models(fx):
  """(latent learner module, variables, generator, variables) from the checkpoint the fixture names."""
  (pt_name,) = [name for name in fx.meta["checkpoints"] if name.endswith(".pt")]
  ckpt = fixtures.load_checkpoint(fx, pt_name)
  ctor = json.loads(fx.resolve(pathlib.Path(pt_name).with_suffix(".json").name).read_text())["constructor"]
  kw = fixtures.call_kwargs(ctor["ll"]["call"])
  config, ll_vars = gangealing.convert_latent_learner(
    ckpt["ll"], inject_index=kw["inject_index"], n_latent=kw["n_latent"]
  )
  assert (config["num_heads"], config["ndirs"]) == (kw["num_heads"], kw["n_comps"])
  g_config, g_vars = convert_g.convert_generator(ckpt["g_ema"])
  return ll_lib.from_config(config), ll_vars, stylegan2.generator_from_config(g_config), g_vars


def _replay(fx):
  """{output name: our value} for every output the fixture records, plus printed PCA diagnostics."""
  ll, llv, G, gv = _models(fx)
  a = fx.arrays
  out = {}
  # PCA: the W pool, then upstream's IncrementalPCA reproduced (the exact fit is reported below).
  out["pca_w_pool"] = G.apply(gv, jnp.asarray(a["pca_z_pool"]), method=G.mapping)
  n_comps = int(re.match(r"PCA\((\d+),", fx.call("pca_components")["call"]).group(1))
  pca = ll_lib.fit_pca_arrays(a["pca_w_pool"], n_comps, method="incremental")
  out["pca_components"] = _up_to_sign(pca.components, a["pca_components"], axis=1)
  out["pca_mean"] = pca.mean
  n_enc = a["pca_encode"].shape[0]
  out["pca_encode"] = _up_to_sign(pca.encode(jnp.asarray(a["pca_w_pool"][:n_enc])), a["pca_encode"], axis=0)
  exact = ll_lib.fit_pca_arrays(a["pca_w_pool"], n_comps)
  gap = np.abs(_up_to_sign(exact.components, a["pca_components"], axis=1) - a["pca_components"]).max()
  print(
    f"\n{fx.id}: exact PCA vs upstream IncrementalPCA components: max |diff| {gap:.2e} "
    f"({len(ll_lib.sklearn_batches(len(a['pca_w_pool']), 5 * a['pca_w_pool'].shape[1], n_comps))} "
    "sklearn batches)"
  )
  # The interpolator, for each recorded psi and with lat_mean overridden.
  w = out["w"] = G.apply(gv, jnp.asarray(a["z"]), method=G.mapping)
  out["c"] = ll.apply(llv, method=ll.targets)
  psis = [float(p) for p in re.search(r"psi in \[([^\]]*)\]", fx.call("c")["call"]).group(1).split(",")]
  for psi in psis:
    out[f"ll_out_psi{psi}"] = ll.apply(llv, w, psi)
  psi = fixtures.call_kwargs(fx.call("ll_out_latmean")["call"])["psi"]
  out["ll_out_latmean"] = ll.apply(llv, w, psi, lat_mean=jnp.asarray(a["lat_mean_override"]))
  # The congealing targets G(ll(w, psi=0)) with the generator's noise buffers.
  synth = jax.jit(lambda v, latent: G.apply(v, latent, input_is_latent=True, randomize_noise=False))
  out["target_img_psi0"] = synth(gv, ll.apply(llv, w, method=ll.target_latents))
  # k-means++ with the recorded z pool, noise (one list per G call, in call order) and draws.
  kw = fixtures.call_kwargs(fx.call("km_centroids")["call"])
  noise = [nchw_to_nhwc(n) for n in fx.sequence("km_noise")]
  layers = len(stylegan2.noise_resolutions(G.size))
  render = ll_lib.pose_renderer(
    G, gv, kw["inject_index"], noise=[noise[i : i + layers] for i in range(0, len(noise), layers)]
  )
  draws = [int(a["km_randint_0"][0])] + [int(d[0]) for d in fx.sequence("km_multinomial")]
  pool = G.apply(gv, jnp.asarray(a["km_z_0"]), method=G.mapping)
  assert pool.shape[0] == kw["num_latent"]
  km = ll_lib.kmeans_plusplus(pool, render, _mse, kw["num_heads"], draws=draws, batch_size=kw["batch_size"])
  np.testing.assert_array_equal(km.indices, draws)
  out["km_centroids"] = km.centroids
  for i, p in enumerate(km.probabilities):
    out[f"km_logits_{i}"] = p
  return out


@pytest.mark.parity
@pytest.mark.parametrize("fx", fixtures.collect("latent_learner"))
def test_latent_learner_matches_upstream_for_every_recorded_output(fx):
  ours = _replay(fx)
  outputs = [k for k, m in fx.meta["arrays"].items() if m["kind"] == "output"]
  missing = sorted(set(outputs) - set(ours))
  assert not missing, f"{fx.id}: recorded outputs this test does not replay: {missing}"
  errors = {}
  for name in outputs:
    expected = fx[name]
    if name.startswith("target_img"):
      expected = nchw_to_nhwc(expected)
    errors[name] = assert_close(np.asarray(ours[name]), expected, ATOL, f"{fx.id}:{name}")
  print(f"{fx.id}: max abs errors " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))


@pytest.mark.parity
@pytest.mark.parametrize("fx", fixtures.collect("latent_learner"))
def test_exact_pca_of_the_recorded_pool_matches_a_float64_svd(fx):
  w = fx["pca_w_pool"].astype(np.float64)
  n = fx["pca_components"].shape[0]
  pca = ll_lib.fit_pca_arrays(fx["pca_w_pool"], n)
  _, s, vt = np.linalg.svd(w - w.mean(0), full_matrices=False)
  assert_close(_up_to_sign(pca.components, vt[:n], axis=1), vt[:n], 1e-5, f"{fx.id}:components")
  assert_close(pca.mean, fx["pca_mean"], 1e-6, f"{fx.id}:mean")
  assert_close(pca.explained_variance, s[:n] ** 2 / (len(w) - 1), 1e-5, f"{fx.id}:explained_variance", rtol=1e-5)


# -- properties -------------------------------------------------------------------------------------------


def _random_learner(k=3, ndirs=2, d=16, inject=3, n_latent=8, seed=0):
  ll = ll_lib.LatentLearner(num_heads=k, ndirs=ndirs, style_dim=d, inject_index=inject, n_latent=n_latent)
  v = ll.init(jax.random.PRNGKey(seed), jnp.zeros((1, d)), 1.0)
  v = {"params": {"coefficients": jax.random.normal(jax.random.PRNGKey(seed + 1), (k, ndirs))}, "pca": v["pca"]}
  return ll, v


@pytest.mark.parametrize("wplus", [False, True])
def test_psi_one_returns_w_unchanged(wplus):
  ll, v = _random_learner()
  shape = (4, ll.n_latent, ll.style_dim) if wplus else (4, ll.style_dim)
  w = jax.random.normal(jax.random.PRNGKey(5), shape)
  out = np.asarray(ll.apply(v, w, 1.0, unfold=True))
  expected = np.asarray(w)[:, None] if wplus else np.asarray(w)[:, None, None]
  np.testing.assert_array_equal(out, np.broadcast_to(expected, out.shape))


def test_psi_zero_puts_c_in_the_injected_layers_image_major():
  ll, v = _random_learner()
  w = jax.random.normal(jax.random.PRNGKey(6), (4, ll.style_dim))
  out = np.asarray(ll.apply(v, w, method=ll.target_latents))
  c = np.asarray(ll.apply(v, method=ll.targets))
  k, inj = ll.num_heads, ll.inject_index
  assert out.shape == (4 * k, ll.n_latent, ll.style_dim)
  for b in range(4):
    for h in range(k):
      np.testing.assert_array_equal(out[b * k + h, :inj], np.broadcast_to(c[h], (inj, ll.style_dim)))
      np.testing.assert_array_equal(out[b * k + h, inj:], np.broadcast_to(w[b], (ll.n_latent - inj, ll.style_dim)))
  # c = lat_mean + coefficients @ directions (eq. 4), and a lat_mean override replaces only the mean.
  expected_c = v["pca"]["lat_mean"] + v["params"]["coefficients"] @ v["pca"]["directions"]
  assert_close(c, expected_c, 1e-5, "c")
  shift = jnp.ones((1, ll.style_dim))
  assert_close(ll.apply(v, lat_mean=v["pca"]["lat_mean"] + shift, method=ll.targets), c + 1, 1e-5, "override")


def test_gradient_reaches_the_coefficients():
  ll, v = _random_learner(k=1, ndirs=2)
  w = jax.random.normal(jax.random.PRNGKey(7), (3, ll.style_dim))
  psi = 0.25
  grad = jax.grad(lambda p: jnp.sum(ll.apply({"params": p, "pca": v["pca"]}, w, psi)))(v["params"])
  # d/dalpha sum_{b, l < inject} (1 - psi) c = B * inject * (1 - psi) * sum_j directions.
  expected = 3 * ll.inject_index * (1 - psi) * np.sum(v["pca"]["directions"], axis=1)[None]
  assert_close(grad["coefficients"], expected, 1e-4, "grad")


@pytest.mark.parametrize("method", ["covariance", "incremental"])
def test_streaming_pca_over_batches_equals_one_shot_svd(method):
  # A W-like pool: large mean (W of a StyleGAN has |mean| >> std) and a spread-out spectrum.
  d, n_comps, batch, n = 24, 3, 40, 390
  rng = np.random.default_rng(0)
  scales = np.linspace(3.0, 0.2, d)
  basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
  mean = 30.0 + rng.normal(size=d)
  sample = lambda key, b: (jax.random.normal(key, (b, d)) * scales) @ basis.T.astype(np.float32) + mean
  pca = ll_lib.fit_pca(sample, jax.random.PRNGKey(3), n_comps, num_samples=n, batch_size=batch, method=method)
  # The same draws at once: batch i is sample(fold_in(key, i), batch); the last one is cut to n rows.
  w = np.concatenate(
    [np.asarray(sample(jax.random.fold_in(jax.random.PRNGKey(3), i), batch), np.float64) for i in range(-(-n // batch))]
  )[:n]
  _, s, vt = np.linalg.svd(w - w.mean(0), full_matrices=False)
  assert float(pca.n_samples) == n
  assert_close(pca.mean, w.mean(0, keepdims=True), 1e-4, "mean")
  if method == "covariance":
    # Exact PCA: every batch split gives the SVD of the whole pool.
    assert_close(_up_to_sign(pca.components, vt[:n_comps], axis=1), vt[:n_comps], 1e-4, "components")
    assert_close(pca.explained_variance, s[:n_comps] ** 2 / (n - 1), 0, "variance", rtol=1e-4)
    x = w[:5].astype(np.float32)
    assert_close(np.abs(pca.encode(x)), np.abs((w[:5] - w.mean(0)) @ vt[:n_comps].T), 2e-3, "encode")
  else:
    # Rank-N incremental SVD is only approximate across batches; one batch holding all rows is exact.
    one = ll_lib.fit_pca_arrays(w.astype(np.float32), n_comps, batch_size=n, method=method)
    assert_close(_up_to_sign(one.components, vt[:n_comps], axis=1), vt[:n_comps], 1e-4, "components")


@pytest.mark.parametrize("seed", range(4))
def test_kmeans_plusplus_with_k_distinct_points_picks_each_once(seed):
  # A chosen point is at distance 0 from itself, so D^2 sampling can never pick it again.
  points = jax.random.normal(jax.random.PRNGKey(seed), (6, 12))
  render = lambda w, mean_w: w.reshape(w.shape[0], 2, 2, 3)
  km = ll_lib.kmeans_plusplus(points, render, _mse, 6, key=jax.random.PRNGKey(seed + 10), batch_size=4)
  assert sorted(km.indices.tolist()) == list(range(6))
  np.testing.assert_array_equal(np.asarray(km.centroids), np.asarray(points)[km.indices])
  for p, chosen in zip(km.probabilities, km.indices[1:]):
    assert abs(float(np.sum(p)) - 1) < 1e-5 and p[chosen] > 0
  with pytest.raises(ValueError, match="impossible"):
    ll_lib.kmeans_plusplus(points, render, _mse, 2, draws=[1, 1])


def test_variables_from_pca_start_targets_at_the_centroid_projections():
  w = np.random.default_rng(1).normal(size=(200, 8)).astype(np.float32)
  pca = ll_lib.fit_pca_arrays(w, 3)
  centroids = w[:2]
  v = ll_lib.variables_from_pca(pca, 2, centroids)
  ll = ll_lib.LatentLearner(num_heads=2, ndirs=3, style_dim=8, inject_index=2, n_latent=4)
  assert_close(ll.apply(v, method=ll.targets), pca.decode(pca.encode(centroids)), 1e-5, "c")
  assert not np.any(ll_lib.variables_from_pca(pca, 1)["params"]["coefficients"])


def test_converter_refuses_unknown_missing_and_inconsistent_keys():
  sd = {
    "coefficients": np.zeros((2, 3), np.float32),
    "directions": np.zeros((3, 8), np.float32),
    "lat_mean": np.zeros((1, 8), np.float32),
  }
  config, v = gangealing.convert_latent_learner(sd, inject_index=2, n_latent=4)
  assert config == {"num_heads": 2, "ndirs": 3, "style_dim": 8, "inject_index": 2, "n_latent": 4}
  assert v["pca"]["directions"].shape == (3, 8)
  with pytest.raises(sdc.ConversionError, match="not understood"):
    gangealing.convert_latent_learner({**sd, "extra": np.zeros(1)})
  with pytest.raises(sdc.ConversionError, match="missing"):
    gangealing.convert_latent_learner({k: sd[k] for k in ("coefficients", "directions")})
  with pytest.raises(sdc.ConversionError, match="disagree"):
    gangealing.convert_latent_learner({**sd, "directions": np.zeros((4, 8), np.float32)})
  with pytest.raises(sdc.ConversionError, match="lat_mean"):
    gangealing.convert_latent_learner({**sd, "lat_mean": np.zeros((1, 7), np.float32)})
  with pytest.raises(ValueError, match="inject_index"):
    ll_lib.from_config(gangealing.convert_latent_learner(sd)[0])
