"""GANgealing trainer (Peebles et al., "GAN-Supervised Dense Visual Alignment", CVPR 2022, §3 and appendix B).

A frozen StyleGAN2 generates pairs: x = G(w) and its target y = G(mix(c, w)), where the first `inject` W+ layers
of w are pulled towards the learned target latent c (eq. 3; psi annealed 1 -> 0 with a cosine). A Spatial
Transformer T (similarity then dense flow) learns to warp x onto y while c (PCA-parameterised, eq. 4) is
learned jointly:

    L = E_w [ l(T(x), y) ] + lambda_TV L_TV(flow) + lambda_I ||flow||^2                    (eq. 5, appendix B)

with l a perceptual distance. With K > 1 targets (clustering, §3.2) each sample picks its nearest head (and
optionally the mirrored input), and only that head is regularised.

One jitted step on a data-parallel mesh: the batch is split over the "data" axis, parameters are replicated
(rules in jaxgeal/sharding.py); micro-batches are accumulated inside the step when the global batch (40 by
default) does not fit; per-step randomness is `fold_in(seed key, step)`, so a resumed run continues exactly.

Entry point: `python -m jaxgeal.main --config=configs/cats.py --workdir=DIR`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxgeal import checkpoint, images, metric_writers, schedules, sharding, storage
from jaxgeal.losses import gangealing as gg_losses
from jaxgeal.models import latent_learner as ll_lib
from jaxgeal.models import lpips, stylegan2
from jaxgeal.models import stn as stn_lib
from jaxgeal.ops import mipmap
from jaxgeal.trainers import loop

# -- models -------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Models:
  """The static (hashable) half of the training problem: modules and shapes."""

  G: stylegan2.Generator
  stn: Any
  ll: ll_lib.LatentLearner
  flow_size: int
  num_heads: int
  flips: bool
  padding_mode: str
  sample_from_full_res: bool
  tv_weight: float
  fi_weight: float
  freeze_ll: bool
  # Equivariance term (jaxgeal addition, off in the paper configs): weight, and the random similarities'
  # ranges (max rotation in radians, max |log scale|, max shift in normalised coordinates).
  eq_weight: float = 0.0
  eq_range: tuple = (0.0, 0.0, 0.0)
  eq_zoom_neutral: bool = False


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  stn: Any  # STN params
  stn_ema: Any  # EMA of the STN params (what is evaluated and exported)
  ll: Any  # latent learner params {"coefficients": (K, N)}
  pca: Any  # latent learner "pca" collection (directions, lat_mean): fixed after init
  stn_opt: Any
  ll_opt: Any
  rng: jax.Array  # base key; step keys are fold_in(rng, step)


def load_generator(config) -> tuple[stylegan2.Generator, Any, dict]:
  """The frozen generator: from a jaxgeal model directory, or random weights when checkpoint is None."""
  gc = config.generator
  if gc.checkpoint is None:
    gcfg = dict(
      size=gc.size,
      style_dim=gc.style_dim,
      n_mlp=gc.n_mlp,
      channels=[tuple(c) for c in gc.channels]
      if gc.channels
      else [list(x) for x in stylegan2.default_channels(gc.channel_multiplier, gc.size)],
    )
    G = stylegan2.generator_from_config(gcfg, dtype=jnp.dtype(config.get("dtype", "float32")))
    z = jnp.zeros((1, gc.style_dim))
    variables = jax.jit(lambda k: G.init(k, z, randomize_noise=False))(jax.random.PRNGKey(config.seed + 1))
    return G, variables, gcfg
  path = storage.as_path(gc.checkpoint)
  if not (path / "model.json").exists():
    raise FileNotFoundError(
      f"generator checkpoint {path} not found. Convert the PyTorch generator first, e.g.\n"
      f"  python -m jaxgeal.convert stylegan2 cat.pt {path}\n"
      f"(or `python -m jaxgeal.convert gangealing cat.pt {path}` for a GANgealing checkpoint), or set "
      f"--config.generator.checkpoint=DIR"
    )
  kind, gcfg, variables = checkpoint.load_model(path, gc.get("name", "g_ema"))
  if kind != "generator":
    raise ValueError(f"{path}:{gc.get('name')} is a {kind}, not a generator")
  return stylegan2.generator_from_config(gcfg, dtype=jnp.dtype(config.get("dtype", "float32"))), variables, gcfg


def make_perceptual(config):
  """The distance l(T(x), y) -> (B,): vgg_ssl / lpips from converted weights, or the MSE stand-in."""
  kind = config.perceptual.kind
  if kind == "mse":
    return gg_losses.MSEDistance()
  if kind == "lcn":
    return gg_losses.LocalContrastDistance(sigma=config.perceptual.lcn_sigma, scales=config.perceptual.lcn_scales)
  return lpips.load_perceptual_loss(
    kind, config.perceptual.weights_dir, dtype=jnp.dtype(config.get("dtype", "float32"))
  )


def build_models(config, G, gcfg) -> Models:
  sc = config.stn
  stn = stn_lib.build_stn(
    transforms=tuple(sc.transform),
    flow_size=sc.flow_size,
    supersize=config.real_size,
    channel_multiplier=sc.channel_multiplier,
    num_heads=sc.num_heads,
    channels=tuple(tuple(c) for c in sc.channels) if sc.get("channels") else None,
    dtype=jnp.dtype(config.get("dtype", "float32")),
  )
  ll = ll_lib.LatentLearner(  # a few dense layers on latents: float32 whatever config.dtype
    num_heads=sc.num_heads,
    ndirs=config.ll.ndirs,
    style_dim=gcfg["style_dim"],
    inject_index=config.ll.inject,
    n_latent=G.n_latent,
  )
  return Models(
    G=G,
    stn=stn,
    ll=ll,
    flow_size=sc.flow_size,
    num_heads=sc.num_heads,
    flips=config.flips,
    padding_mode=sc.padding_mode,
    sample_from_full_res=config.sample_from_full_res,
    tv_weight=config.loss.tv_weight,
    fi_weight=config.loss.flow_identity_weight,
    freeze_ll=config.ll.freeze,
    eq_weight=float(config.loss.get("equivariance_weight", 0.0)),
    eq_range=(
      math.radians(config.loss.get("equivariance_rotation", 0.0)),
      float(config.loss.get("equivariance_log_scale", 0.0)),
      float(config.loss.get("equivariance_shift", 0.0)),
    ),
    eq_zoom_neutral=bool(config.loss.get("equivariance_zoom_neutral", False)),
  )


def make_optimizers(config):
  o = config.optim
  sched = lambda lr: schedules.gangealing_lr_schedule(lr, o.anneal_psi, o.period, t_mult=o.t_mult, decay=o.decay)
  adam = lambda lr: optax.adam(sched(lr), b1=o.b1, b2=o.b2, eps=o.eps)
  return adam(o.stn_lr), adam(o.ll_lr), sched(o.stn_lr), sched(o.ll_lr)


# -- the loss (shared with the parity test) ------------------------------------------------------------------


def _first_similarity(out: stn_lib.STNOutput, n: int, k: int):
  """M(x) (N, K, 2, 3) of the first similarity stage from a training forward pass (iters = 1; rows (flip, b, k):
  the first N*K are the unflipped inputs), so the equivariance loss regresses only the resampled inputs."""
  stage = out.intermediates[0] if out.intermediates else out
  return None if stage.matrix is None else stage.matrix[: n * k].reshape(n, k, 2, 3)


def sample_and_loss(
  models: Models,
  stn_params,
  ll_vars,
  gen_vars,
  perceptual,
  z,
  psi,
  noise=None,
  rng=None,
  return_aux: bool = False,
  cluster: bool | None = None,
):
  """GAN-supervised pairs and the GANgealing loss for latents z.

  noise: optional (noise for x, noise for the targets) lists of per-layer maps (the parity fixture records
  them); otherwise drawn from `rng`, independently for the two generator passes (upstream: sharing them hurts).
  cluster: use the clustering loss (min over heads / flips); default: when K > 1 or flips, as train.py does.
  """
  G = models.G
  if noise is None:
    k1, k2 = jax.random.split(rng)
    gen = lambda *a, key, **kw: G.apply(gen_vars, *a, rngs={"noise": key}, **kw)
    unaligned, wplus = gen(z, key=k1, return_latents=True)
  else:
    unaligned, wplus = G.apply(gen_vars, z, noise=noise[0], return_latents=True)
  # Targets y = G(mix(c, w)) with the first `inject` layers lerped towards c (eq. 3). G is frozen: its
  # weights get no gradient, but c's coefficients do, through G.
  target_latents = models.ll.apply(ll_vars, wplus[:, 0], psi)
  if noise is None:
    target = G.apply(gen_vars, target_latents, rngs={"noise": k2}, method=G.synthesis)
  else:
    target = G.apply(gen_vars, target_latents, noise[1], method=G.synthesis)
  down = functools.partial(mipmap.downsample_to, size=models.flow_size)
  aligned_target = down(target)
  if cluster is None:
    cluster = models.num_heads > 1 or models.flips
  loss_terms = (
    functools.partial(gg_losses.gangealing_cluster_loss, num_heads=models.num_heads, flips=models.flips)
    if cluster
    else gg_losses.gangealing_loss
  )

  forward = {}

  def run_stn(x_small, x_full):
    forward["out"] = stn_lib.apply_for_training(
      models.stn, stn_params, x_small, x_full, padding_mode=models.padding_mode
    )
    return forward["out"]

  x = down(unaligned)
  src_full = unaligned if models.sample_from_full_res else None
  terms = loss_terms(
    run_stn, perceptual, x, src_full, aligned_target, tv_weight=models.tv_weight, fi_weight=models.fi_weight
  )
  eq = jnp.zeros((), terms["total"].dtype)
  if models.eq_weight:
    if rng is None:
      raise ValueError("the equivariance loss draws random warps: pass rng")
    rot, log_scale, shift = models.eq_range
    eq = gg_losses.equivariance_loss(
      lambda im: stn_lib.predict_similarity(models.stn, stn_params, im),
      x,
      jax.random.fold_in(rng, 1),
      max_rotation=rot,
      max_log_scale=log_scale,
      max_shift=shift,
      padding_mode=models.padding_mode,
      zoom_neutral=models.eq_zoom_neutral,
      matrices=_first_similarity(forward["out"], x.shape[0], models.num_heads),
    )
  terms = dict(terms, total=terms["total"] + models.eq_weight * eq, equivariance=eq)
  if return_aux:
    terms = dict(terms, unaligned=unaligned, target_fullres=target, aligned_target=aligned_target)
  return terms


METRICS = ("total", "perceptual", "tv", "flow_identity", "equivariance")  # per-step losses logged


# -- the step -----------------------------------------------------------------------------------------------


def make_train_step(models: Models, config, mesh, stn_tx, ll_tx, stn_sched, ll_sched):
  micro = config.micro_batch_size
  n_micro = config.batch_size // micro
  unroll = config.get("unroll_micro_batches")
  unroll = jax.default_backend() == "cpu" if unroll is None else bool(unroll)
  psi_fn = schedules.psi_schedule(config.optim.anneal_psi, config.optim.anneal_fn)
  style_dim = models.ll.style_dim
  ema = config.ema_decay

  def loss_fn(params, state, gen_vars, perceptual, key, psi):
    stn_params, ll_params = sharding.gather(params, mesh)
    gen_vars, perceptual = sharding.gather((gen_vars, perceptual), mesh)
    kz, kn = jax.random.split(key)
    z = sharding.constrain_batch(jax.random.normal(kz, (micro, style_dim)), mesh)
    ll_vars = {"params": ll_params, "pca": sharding.gather(state.pca, mesh)}
    terms = sample_and_loss(models, stn_params, ll_vars, gen_vars, perceptual, z, psi, rng=kn)
    return terms["total"], {k: terms[k] for k in METRICS}

  def train_step(state: TrainState, gen_vars, perceptual):
    psi = psi_fn(state.step)
    step_key = jax.random.fold_in(state.rng, state.step)
    grad_fn = jax.grad(loss_fn, has_aux=True)

    def accumulate(carry, i):
      grads, metrics = carry
      g, m = grad_fn((state.stn, state.ll), state, gen_vars, perceptual, jax.random.fold_in(step_key, i), psi)
      return (jax.tree_util.tree_map(jnp.add, grads, g), jax.tree_util.tree_map(jnp.add, metrics, m)), None

    zeros = jax.tree_util.tree_map(jnp.zeros_like, (state.stn, state.ll))
    zero_m = {k: jnp.zeros(()) for k in METRICS}
    # XLA:CPU runs convolutions inside a while loop up to 10x slower (jax-ml/jax#12868: the paper-config
    # step took 52 s in a length-1 scan, 5.7 s without), so on CPU the micro-batches are unrolled (compile
    # time grows with their number); elsewhere a scan keeps one copy of the program.
    if unroll:  # A Python loop: lax.scan keeps a while loop even when unrolled, for length 1.
      carry = (zeros, zero_m)
      for i in range(n_micro):
        carry, _ = accumulate(carry, i)
      grads, metrics = carry
    else:
      (grads, metrics), _ = jax.lax.scan(accumulate, (zeros, zero_m), jnp.arange(n_micro))
    # Equal micro-batches: the mean of per-micro-batch means is the global-batch mean.
    grads, metrics = jax.tree_util.tree_map(lambda x: x / n_micro, (grads, metrics))
    g_stn, g_ll = grads
    stn_params, stn_opt = loop.apply_gradients(stn_tx, g_stn, state.stn_opt, state.stn)
    if models.freeze_ll:
      ll_params, ll_opt = state.ll, state.ll_opt
    else:
      ll_params, ll_opt = loop.apply_gradients(ll_tx, g_ll, state.ll_opt, state.ll)
    # EMA over parameters (upstream `accumulate(t_ema, t, 0.5 ** (32 / 10000))`).
    stn_ema = jax.tree_util.tree_map(lambda e, p: ema * e + (1 - ema) * p, state.stn_ema, stn_params)
    metrics.update(psi=psi, stn_lr=stn_sched(state.step), ll_lr=ll_sched(state.step))
    new = state.replace(
      step=state.step + 1, stn=stn_params, stn_ema=stn_ema, ll=ll_params, stn_opt=stn_opt, ll_opt=ll_opt
    )
    return new, metrics

  return train_step


# -- initialisation ---------------------------------------------------------------------------------------


def init_latent_learner(models: Models, config, gen_vars, perceptual, key):
  """PCA of W over `pca_samples` mapped z (appendix B: 1M), and for K > 1 k-means++ on pose-only images."""
  G = models.G
  mapping = jax.jit(lambda z: G.apply(gen_vars, z, method=G.mapping))
  sample_w = lambda k, n: mapping(jax.random.normal(k, (n, models.ll.style_dim)))
  k_pca, k_km = jax.random.split(key)
  logging.info("PCA of W over %d samples", config.ll.pca_samples)
  pca = ll_lib.fit_pca(
    sample_w, k_pca, config.ll.ndirs, num_samples=config.ll.pca_samples, batch_size=config.ll.pca_batch
  )
  centroids = None
  if models.num_heads > 1:
    n = config.ll.kmeans_samples
    logging.info("k-means++ over %d pose-only samples for %d targets", n, models.num_heads)
    w = sample_w(jax.random.fold_in(k_km, 0), n)
    render = ll_lib.pose_renderer(G, gen_vars, config.ll.inject, key=jax.random.fold_in(k_km, 1))
    down = functools.partial(mipmap.downsample_to, size=models.flow_size)
    distance = jax.jit(lambda a, b: perceptual(down(a), down(b)))
    result = ll_lib.kmeans_plusplus(w, render, distance, models.num_heads, key=jax.random.fold_in(k_km, 2))
    centroids = result.centroids
  variables = ll_lib.variables_from_pca(pca, num_heads=models.num_heads, centroids=centroids)
  return variables["params"], variables["pca"]


def init_state(models: Models, config, gen_vars, perceptual, stn_tx, ll_tx) -> TrainState:
  key = jax.random.PRNGKey(config.seed)
  k_stn, k_ll, k_train = jax.random.split(key, 3)
  x = jnp.zeros((1, config.real_size, config.real_size, 3))
  stn_params = jax.jit(lambda k: models.stn.init(k, x)["params"])(k_stn)
  ll_params, pca = init_latent_learner(models, config, gen_vars, perceptual, k_ll)
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    stn=stn_params,
    ll=ll_params,
    pca=pca,
    stn_ema=jax.tree_util.tree_map(jnp.copy, stn_params),
    stn_opt=stn_tx.init(stn_params),
    ll_opt=ll_tx.init(ll_params),
    rng=k_train,
  )


# -- visuals and export ---------------------------------------------------------------------------------------


def make_visualize(models: Models, config):
  n = config.n_vis
  z = jax.random.normal(jax.random.PRNGKey(config.seed + 7), (n, models.ll.style_dim))

  @jax.jit
  def visualize(state: TrainState, gen_vars):
    G = models.G
    x = G.apply(gen_vars, z, randomize_noise=False)
    w = G.apply(gen_vars, z, method=G.mapping)
    ll_vars = {"params": state.ll, "pca": state.pca}
    targets = G.apply(gen_vars, models.ll.apply(ll_vars, w[:1], 0.0), None, False, method=G.synthesis)
    small = mipmap.downsample_to(x, models.flow_size)
    aligned = stn_lib.apply_for_training(models.stn, state.stn_ema, small, x, padding_mode=models.padding_mode)
    aligned = aligned["image"]
    return x, aligned, targets, jnp.mean(aligned.reshape((n, -1) + aligned.shape[1:]), axis=0)

  def grids(state, gen_vars):
    x, aligned, targets, average = sharding.to_host(visualize(state, gen_vars))
    k = models.num_heads
    out = {"x": images.make_grid(x), "aligned": images.make_grid(aligned), "targets": images.make_grid(targets)}
    out["average"] = images.make_grid(average)
    del k
    return out

  return grids


def export_model(workdir, state: TrainState, models: Models, config, gcfg, gen_vars):
  """workdir/model: the trained t_ema + ll (+ g_ema) as a model directory for `jaxgeal.align`."""
  stn_cfg = dict(stn_lib.config_of(models.stn), test=dict(config.test))
  ll_cfg = dict(
    num_heads=models.num_heads,
    ndirs=models.ll.ndirs,
    style_dim=models.ll.style_dim,
    inject_index=models.ll.inject_index,
    n_latent=models.ll.n_latent,
  )
  models_out = {
    "t_ema": ("stn", stn_cfg, {"params": state.stn_ema}),
    "ll": ("latent_learner", ll_cfg, {"params": state.ll, "pca": state.pca}),
    "g_ema": ("generator", gcfg, gen_vars),
  }
  return checkpoint.save_models(
    storage.as_path(workdir) / "model", models_out, source="jaxgeal.trainers.gangealing", overwrite=True
  )


# -- the loop -----------------------------------------------------------------------------------------------


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Train (or resume) in workdir; the config is validated by jaxgeal.main.run (trainers.config_checks)."""
  workdir = storage.as_path(workdir)
  mesh = sharding.mesh_from_config(config)
  shardings = lambda tree: sharding.state_shardings(mesh, tree, sharding.min_shard_size(config))
  G, gen_vars, gcfg = load_generator(config)
  perceptual = make_perceptual(config)
  models = build_models(config, G, gcfg)
  stn_tx, ll_tx, stn_sched, ll_sched = make_optimizers(config)
  manager = checkpoint.training_manager(workdir, max_to_keep=config.keep_checkpoints)
  # The frozen generator and perceptual network follow the same rule as the state (FSDP-sharded on such a mesh).
  gen_vars = jax.device_put(gen_vars, shardings(gen_vars))
  perceptual = jax.device_put(perceptual, shardings(perceptual))
  state = loop.restore_or_init(
    manager,
    lambda: init_state(models, config, gen_vars, perceptual, stn_tx, ll_tx),
    lambda: init_state_shapes(models, config, stn_tx, ll_tx),
    shardings,
    config,
  )
  state = jax.device_put(state, shardings(state))

  train_step = sharding.jit_step(
    make_train_step(models, config, mesh, stn_tx, ll_tx, stn_sched, ll_sched),
    mesh,
    in_shardings=(shardings(state), shardings(gen_vars), shardings(perceptual)),
    out_shardings=(shardings(state), sharding.replicated(mesh)),
    donate_argnums=(0,),
  )
  grids = make_visualize(models, config)
  loop.log_parameters("gangealing", {"stn": state.stn, "ll": state.ll})
  writer = metric_writers.create_default_writer(workdir, resume_step=int(state.step))
  state = loop.run(
    name="gangealing",
    state=state,
    step_fn=lambda s, _: train_step(s, gen_vars, perceptual),
    start_step=int(state.step),
    total_steps=config.total_steps,
    manager=manager,
    writer=writer,
    log_every=config.log_every,
    ckpt_every=config.ckpt_every,
    vis_every=config.vis_every,
    visualize=lambda s: grids(s, gen_vars),
    extra_ckpt_steps=schedules.lr_cycle_iters(
      config.optim.anneal_psi, config.optim.period, config.total_steps, tm=config.optim.t_mult
    ),
  )
  export_model(workdir, state, models, config, gcfg, gen_vars)
  writer.close()
  return state


def init_state_shapes(models: Models, config, stn_tx, ll_tx) -> TrainState:
  """A TrainState of the right structure and shapes (for restoring), without running PCA."""
  x = jnp.zeros((1, config.real_size, config.real_size, 3))
  stn_params = models.stn.init(jax.random.PRNGKey(0), x)["params"]
  ll_vars = models.ll.init(jax.random.PRNGKey(0), jnp.zeros((1, models.ll.style_dim)), 1.0)
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    stn=stn_params,
    stn_ema=stn_params,
    ll=ll_vars["params"],
    pca=ll_vars["pca"],
    stn_opt=stn_tx.init(stn_params),
    ll_opt=ll_tx.init(ll_vars["params"]),
    rng=jax.random.PRNGKey(0),
  )
