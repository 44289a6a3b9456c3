"""GANgealing losses (§3.1, eq. 5) against the `losses_gangealing` fixtures (root and multihead/).

Flow regularisers (L_TV, L_I): `total_variation_loss` on a flow whose neighbour differences fall on both
sides of the Huber knee (batch-reduced and per sample), `flow_identity_loss`, and both terms of every recorded
loss call recomputed from that call's recorded residual flow (`<prefix>_delta_flow` -> `<prefix>_tv`,
`<prefix>_fi`). Tolerance 1e-6 relative to the value (float32 means of ~1e4 terms).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgeal.losses import gangealing as gg
from tests.fixtures import assert_close, collect

RTOL = 1e-6


@pytest.mark.parity
@pytest.mark.parametrize("fx", collect("losses_gangealing"))
def test_total_variation_and_flow_identity_losses(fx):
  flow = fx["tv_flow"]
  diffs = np.abs(np.concatenate([np.diff(flow, axis=1).ravel(), np.diff(flow, axis=2).ravel()]))
  assert diffs.min() < 1.0 < diffs.max(), "the fixture should exercise both branches of the Huber penalty"
  assert_close(gg.total_variation_loss(flow), fx["tv_loss"], 0.0, "tv_loss", rtol=RTOL)
  assert_close(
    gg.total_variation_loss(flow, reduce_batch=False), fx["tv_loss_per_sample"], 0.0, "tv_loss_per_sample", rtol=RTOL
  )
  assert_close(gg.flow_identity_loss(flow), fx["flow_identity_loss"], 0.0, "flow_identity_loss", rtol=RTOL)


@pytest.mark.parity
@pytest.mark.parametrize("fx", collect("losses_gangealing"))
def test_recorded_regulariser_terms_of_each_loss_call(fx):
  prefixes = sorted({m.group(1) for name in fx.arrays if (m := re.fullmatch(r"(\w+)_delta_flow", name))})
  checked = 0
  for p in prefixes:
    for term, fn in (("tv", gg.total_variation_loss), ("fi", gg.flow_identity_loss)):
      if f"{p}_{term}" in fx:
        assert_close(fn(fx[f"{p}_delta_flow"]), fx[f"{p}_{term}"], 0.0, f"{p}_{term}", rtol=RTOL)
        checked += 1
  assert checked >= 2, f"{fx.id}: no recorded tv / fi terms found"


def test_total_variation_properties():
  """Zero for constant flows; the Huber knee: 0.5 d^2 below 1, d - 0.5 above; finite gradients at 0."""
  const = np.full((2, 5, 6, 2), 0.3, np.float32)
  assert float(gg.total_variation_loss(const)) == 0.0
  for d in (0.5, 3.0):
    flow = np.zeros((1, 2, 2, 2), np.float32)
    flow[0, 1] = d  # Every vertical difference is d, every horizontal one 0.
    expected = 0.5 * d * d if d <= 1 else d - 0.5
    assert_close(gg.total_variation_loss(flow), expected, 1e-6, f"knee d={d}")
  g = jax.grad(gg.total_variation_loss)(const)
  assert np.all(np.isfinite(g)) and np.all(g == 0)


# -- the full objective, through the trainer's own loss function ---------------------------------------------


def _perceptual(fx, note: str):
  from jaxgeal.convert import lpips as convert_lpips
  from jaxgeal.models import lpips
  from tests.fixtures import load_checkpoint

  if "mse stand-in" in note:
    return gg.MSEDistance()
  vgg = load_checkpoint(fx, "simclr_vgg_phase150.pt")
  if '"vgg_ssl"' in note:
    _, _, variables = convert_lpips.convert(vgg)
    return lpips.make_perceptual_loss("vgg_ssl", variables)
  if '"lpips"' in note:
    _, _, variables = convert_lpips.convert(vgg, load_checkpoint(fx, "lpips_vgg_v0.1.pt"))
    return lpips.make_perceptual_loss("lpips", variables)
  raise ValueError(f"unknown loss_fn in note: {note}")


def recorded_loss_calls(fx, dtype=np.float32):
  """Each loss call a `losses_gangealing` fixture recorded, recomputed through the trainer's own loss function
  with every float input (weights, z, noise) cast to `dtype`: yields (prefix, cluster, outputs), where outputs
  maps each recorded output name (`<prefix>_<term>`, `<prefix>_grad__<param>`) to our value for it. float64
  needs `jax_enable_x64` (benchmarks/loss_gradients_float64.py)."""
  import json

  from jaxgeal.convert import gangealing as convert_gg
  from jaxgeal.models import latent_learner as ll_lib
  from jaxgeal.models import stn as stn_lib
  from jaxgeal.models import stylegan2
  from jaxgeal.trainers import gangealing as trainer
  from tests.fixtures import call_kwargs, load_checkpoint, nchw_to_nhwc

  hp = fx.meta["hyperparameters"]
  # The checkpoint holding the networks, and the json that records its constructors ("... (see stn.json)"):
  # the ll state dict does not store its inject index.
  ((stn_file, stn_desc),) = [(n, d) for n, d in fx.meta["checkpoints"].items() if "t_ema" in str(d)]
  stn_meta = json.loads(fx.resolve(re.search(r"see (\S+\.json)", stn_desc).group(1)).read_text())
  inject = call_kwargs(stn_meta["constructor"]["ll"]["call"])["inject_index"]
  nets = convert_gg.convert_gangealing_checkpoint(load_checkpoint(fx, stn_file), inject_index=inject)
  _, gcfg, gen_vars = nets["g_ema"]
  _, scfg, stn_vars = nets["t_ema"]
  _, lcfg, ll_vars = nets["ll"]
  G = stylegan2.generator_from_config(gcfg)
  stn = stn_lib.from_config(scfg)
  assert G.size == hp["gen_size"] and scfg["flow_size"] == hp["flow_size"]
  calls = [c for c in fx.meta["calls"] if c["call"].startswith(("gangealing_loss", "gangealing_cluster_loss"))]
  assert calls, "no loss calls recorded"
  for call in calls:
    prefix = re.match(r"(\w+?_\w+?)_", call["outputs"][0]).group(1)
    text = call["call"]
    cluster = text.startswith("gangealing_cluster_loss")
    models = trainer.Models(
      G=G,
      stn=stn,
      ll=ll_lib.from_config(lcfg),
      flow_size=hp["flow_size"],
      num_heads=hp["num_heads"],
      flips="flips=True" in text,
      padding_mode=hp["padding_mode"],
      sample_from_full_res="sample_from_full_res=True" in text,
      tv_weight=hp["tv_weight"],
      fi_weight=hp["flow_identity_weight"],
      freeze_ll=False,
    )
    perceptual = _perceptual(fx, call.get("note", ""))
    noise = [nchw_to_nhwc(n) for n in fx.sequence(f"{prefix}_noise")]
    L = G.num_layers
    assert len(noise) == 2 * L
    z = fx.sequence(f"{prefix}_z")[0]

    def loss(stn_params, coefficients, perceptual, gen_vars, pca, z, noise, models=models, L=L, cluster=cluster):
      lv = {"params": {"coefficients": coefficients}, "pca": pca}
      terms = trainer.sample_and_loss(
        models,
        stn_params,
        lv,
        gen_vars,
        perceptual,
        z,
        hp["psi"],
        noise=(noise[:L], noise[L:]),
        return_aux=True,
        cluster=cluster,
      )
      return terms["total"], terms

    args = (stn_vars["params"], ll_vars["params"]["coefficients"], perceptual, gen_vars, ll_vars["pca"], z, noise)
    args = jax.tree.map(
      lambda x: jnp.asarray(x, dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x, args
    )
    # Jitted (weights as arguments, not constants): one compile instead of thousands of eager dispatches.
    (_, t), (g_stn, g_ll) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(*args)
    ours = {
      "unaligned": t["unaligned"],
      "target_fullres": t["target_fullres"],
      "perceptual": t["perceptual"],
      "delta_flow": t["delta_flow"],
      "tv": t["tv"],
      "fi": t["flow_identity"],
      "total": t["total"],
    }
    if cluster:
      ours.update(distances=t["distances"], assign_indices=t["assignment"], aligned_pred=t["aligned_pred"])
    outputs = {f"{prefix}_{key}": value for key, value in ours.items() if f"{prefix}_{key}" in fx}
    # Recorded as `d total / d <name>`: `ll.<key>` for the latent learner, bare `t_ema` keys for the STN; each
    # mapped back to the upstream layout through the converter's own key map.
    grads = {
      "ll": (convert_gg.LATENT_LEARNER_KEYS, {"params": {"coefficients": g_ll}}),
      "t_ema": (convert_gg.stn_keys(scfg), {"params": g_stn}),
    }
    for name in fx.arrays:
      if name.startswith(prefix + "_grad__"):
        param = name[len(prefix) + 7 :]
        net, key = ("ll", param[3:]) if param.startswith("ll.") else ("t_ema", param)
        keymap, tree = grads[net]
        outputs[name] = keymap.upstream_value(key, tree)
    assert len(outputs) == len(call["outputs"]), f"{prefix}: computed {sorted(outputs)}, recorded {call['outputs']}"
    yield prefix, cluster, outputs


@pytest.mark.parity
@pytest.mark.parametrize("fx", collect("losses_gangealing"))
def test_gangealing_losses_and_gradients_match_upstream(fx):
  from tests.fixtures import nchw_to_nhwc

  for prefix, cluster, outputs in recorded_loss_calls(fx):
    for name, value in outputs.items():
      expected = fx[name]
      if expected.ndim == 4 and expected.shape[1] == 3:
        expected = nchw_to_nhwc(expected)
      key = name[len(prefix) + 1 :]
      if key.startswith("grad__"):
        # Two float32 computations can differ by as much as both lie from the exact value together
        # (benchmarks/loss_gradients_float64.md, relative to the largest value). The similarity heads'
        # gradients pass through bilinear sampling and mipmap level selection, as do all STN gradients of the
        # clustering loss: upstream up to 6.3e-3 from float64, ours up to 2.3e-3 as the tests compile (1.2e-2
        # compiled with LLVM level 1; AVX2 EPYC), so 2e-2. Every other gradient: each at most 2.1e-4, so 1e-3.
        through_sampling = "stns.0" in key or (cluster and "stns." in key)
        rtol = 2e-2 if through_sampling else 1e-3
        assert_close(value, expected, 0.0, name, rtol=rtol)
      else:
        # tv (~1e-4..1e-2, weighted by 1e3) is held relative. STN outputs carry float32 noise up to 3e-5 of
        # their magnitude, which exceeds 1e-4 on |values| ~ 6; the rest 1e-4 absolute.
        atol, rtol = {"tv": (0.0, 1e-4), "aligned_pred": (1e-4, 3e-5)}.get(key, (1e-4, 0.0))
        assert_close(value, expected, atol, name, rtol=rtol)


def test_a_similarity_only_stn_has_no_flow_terms():
  from types import SimpleNamespace

  import jax.numpy as jnp

  x = jnp.ones((2, 8, 8, 3))
  run = lambda a, b: SimpleNamespace(image=a * 0.5, flow=None)
  for terms in (
    gg.gangealing_loss(run, gg.MSEDistance(), x, None, x, tv_weight=1e3, fi_weight=1.0),
    gg.gangealing_cluster_loss(
      run, gg.MSEDistance(), x, None, x, num_heads=1, flips=True, tv_weight=1e3, fi_weight=1.0
    ),
  ):
    assert float(terms["tv"]) == 0.0 and float(terms["flow_identity"]) == 0.0
    np.testing.assert_allclose(terms["total"], 0.25, rtol=1e-6)


def test_local_contrast_distance_ignores_smooth_colour_and_sees_structure():
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[:32, :32] / 31.0
  disc = ((xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.08).astype(np.float32)
  scene = np.stack([disc * 0.8 - 0.4, disc * -0.5 + 0.1, disc * 0.3], -1)[None]  # an object on a flat field
  recoloured = scene * 0.7 + np.stack([xx * 0.8 - 0.2, yy * 0.6, 0 * xx + 0.2], -1)[None].astype(np.float32)
  shifted = np.roll(scene, 4, axis=2)
  d = gg.LocalContrastDistance()
  same, colour, moved = (float(jax.jit(lambda a, b: d(a, b))(scene, o)[0]) for o in (scene, recoloured, shifted))
  assert same < 1e-12
  assert colour < 0.1 * moved, (colour, moved)  # a smooth colour change costs little, a 4 px shift a lot
  mse = gg.MSEDistance()
  assert float(mse(scene, recoloured)[0]) > float(mse(scene, shifted)[0])  # ...where plain MSE ranks them the other way
  batch = rng.uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
  assert d(batch, batch[::-1]).shape == (3,)
  with pytest.raises(ValueError, match="divisible by 2"):
    d(batch[:, :31, :31], batch[:, :31, :31])


def test_local_contrast_blur_is_an_edge_padded_gaussian():
  # The blur runs as two matrix products; it must equal the direct separable FIR over an edge-padded image.
  x = np.random.default_rng(1).normal(size=(2, 12, 9, 3)).astype(np.float32)
  sigma, r = 1.5, 4
  k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
  k /= k.sum()
  p = np.pad(x.astype(np.float64), ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")
  rows = sum(k[i] * p[:, i : i + 12] for i in range(2 * r + 1))
  expected = sum(k[i] * rows[:, :, i : i + 9] for i in range(2 * r + 1))
  np.testing.assert_allclose(gg._gaussian_blur(jnp.asarray(x), sigma), expected, atol=1e-5)


def _blob_pose(images):
  """An ideal (equivariant) pose estimator for one elongated blob: centroid, principal axis and size from image
  moments, as the (N, 1, 2, 3) similarity matrix (output -> input coordinates) that congeals it."""
  from jaxgeal.ops import warp

  grid = np.asarray(warp.identity_grid(images.shape[1:3]))[0]  # (H, W, 2) x, y in [-1, 1]
  w = np.asarray(images)[..., 0]
  w = w / w.sum((1, 2), keepdims=True)
  mu = np.einsum("nhw,hwi->ni", w, grid)
  d = grid[None] - mu[:, None, None]
  cov = np.einsum("nhw,nhwi,nhwj->nij", w, d, d)
  theta = 0.5 * np.arctan2(2 * cov[:, 0, 1], cov[:, 0, 0] - cov[:, 1, 1])
  s = np.linalg.det(cov) ** 0.25
  m = np.stack(
    [
      np.stack([s * np.cos(theta), -s * np.sin(theta), mu[:, 0]], -1),
      np.stack([s * np.sin(theta), s * np.cos(theta), mu[:, 1]], -1),
    ],
    -2,
  )
  return jnp.asarray(m[:, None], jnp.float32)


def test_equivariance_loss_is_zero_for_an_ideal_pose_estimator_and_counts_every_warp_missed():
  from jaxgeal.ops import warp

  grid = np.asarray(warp.identity_grid((48, 48)))[0]
  blobs = []
  for angle, cx in ((0.3, 0.1), (-0.5, -0.1), (1.2, 0.0)):
    rot = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    q = (grid - [cx, 0.05]) @ rot.T / [0.3, 0.12]
    blobs.append(np.exp(-0.5 * (q**2).sum(-1)))
  x = jnp.asarray(np.repeat(np.stack(blobs)[..., None], 3, -1), jnp.float32)
  kw = dict(max_rotation=np.radians(30), max_log_scale=0.2, max_shift=0.2)
  key = jax.random.PRNGKey(3)
  ideal = float(gg.equivariance_loss(_blob_pose, x, key, **kw))
  identity = float(gg.equivariance_loss(lambda im: jnp.broadcast_to(jnp.eye(2, 3), (len(im), 1, 2, 3)), x, key, **kw))
  # An STN that under-rotates (half of every angle, as the demo's did) pays for it.
  half = float(gg.equivariance_loss(lambda im: _under_rotate(_blob_pose(im)), x, key, **kw))
  assert identity > 1e-3
  assert ideal < 0.01 * identity, (ideal, identity)
  assert ideal < 0.1 * half, (ideal, half)
  # M(x) handed in (the training forward pass has it) gives the same value.
  given = float(gg.equivariance_loss(_blob_pose, x, key, matrices=_blob_pose(x), **kw))
  np.testing.assert_allclose(given, ideal, rtol=1e-6)


def test_zoom_neutral_equivariance_does_not_reward_zooming_in():
  """An STN that zooms in (scales every matrix's linear part by z, as on featureless background) pays z^2 less
  in the matrix form; the zoom-neutral form charges the same rotation error whatever the zoom."""
  x = jax.random.uniform(jax.random.PRNGKey(0), (4, 16, 16, 3))
  angle = 0.4 * jnp.arange(1, 5.0)  # a pose estimator that ignores its input: every warp R goes unmatched
  base = jnp.stack(
    [
      jnp.stack([jnp.cos(angle), -jnp.sin(angle), 0 * angle], -1),
      jnp.stack([jnp.sin(angle), jnp.cos(angle), 0 * angle], -1),
    ],
    -2,
  )[:, None]
  key = jax.random.PRNGKey(1)
  kw = dict(max_rotation=np.radians(30), max_log_scale=0.0, max_shift=0.0)

  def loss(zoom, **k):
    constant = lambda im: jnp.tile(base * jnp.array([zoom, zoom, 1.0]), (len(im) // len(base), 1, 1, 1))
    return float(gg.equivariance_loss(constant, x, key, **kw, **k))

  np.testing.assert_allclose(loss(0.25), 0.25**2 * loss(1.0), rtol=1e-5)
  np.testing.assert_allclose(loss(0.25, zoom_neutral=True), loss(1.0, zoom_neutral=True), rtol=1e-5)
  np.testing.assert_allclose(loss(1.0, zoom_neutral=True), loss(1.0), rtol=1e-6)  # at unit zoom they agree
  # A shift that goes unmatched is charged in input units by both forms.
  shifted = dict(max_rotation=0.0, max_log_scale=0.0, max_shift=0.3)
  fixed = lambda im: jnp.broadcast_to(0.25 * jnp.eye(2, 3), (len(im), 1, 2, 3))
  np.testing.assert_allclose(
    float(gg.equivariance_loss(fixed, x, key, **shifted, zoom_neutral=True)),
    float(gg.equivariance_loss(fixed, x, key, **shifted)),
    rtol=1e-6,
  )


def _under_rotate(m):
  """Matrices with their rotation halved (scale and shift kept)."""
  s = jnp.sqrt(jnp.abs(jnp.linalg.det(m[..., :2])))
  theta = 0.5 * jnp.arctan2(m[..., 1, 0], m[..., 0, 0])
  c, n = s * jnp.cos(theta), s * jnp.sin(theta)
  return jnp.stack([jnp.stack([c, -n, m[..., 0, 2]], -1), jnp.stack([n, c, m[..., 1, 2]], -1)], -2)


def test_random_similarity_stays_in_its_ranges():
  m = np.asarray(gg.random_similarity(jax.random.PRNGKey(0), 500, 0.5, 0.1, 0.2))
  angle = np.arctan2(m[:, 1, 0], m[:, 0, 0])
  log_scale = 0.5 * np.log(np.linalg.det(m[:, :, :2]))
  assert np.abs(angle).max() <= 0.5 + 1e-6 and np.abs(angle).max() > 0.45
  assert np.abs(log_scale).max() <= 0.1 + 1e-6 and np.abs(m[:, :, 2]).max() <= 0.2 + 1e-6
  np.testing.assert_allclose(m[:, 0, 0], m[:, 1, 1], atol=1e-6)  # a similarity: no shear
  np.testing.assert_allclose(m[:, 0, 1], -m[:, 1, 0], atol=1e-6)
