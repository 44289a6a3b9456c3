"""StyleGAN2 trainer (Karras et al. 2020, §2-3 and appendix B; rosinality train.py semantics).

Per step: a discriminator update with the logistic loss, every `d_reg_every` steps the lazy R1 penalty
(weight r1/2 * d_reg_every), a generator update with the non-saturating loss, every `g_reg_every` steps the
path-length penalty (weight path_regularize * g_reg_every on a batch shrunk by path_batch_shrink; its gradient
flows through the W+ latents into the mapping network, as upstream), style mixing with probability 0.9 at a
random crossover, and an EMA of the generator (half-life 10k images).
Adam (0.002, betas (0, 0.99)) with the lazy-regularisation correction c = k / (k + 1) on the learning rate and
betas (§3.2: the regulariser runs every k steps with k times the weight).

Same plumbing as the GANgealing trainer: one jitted step on a (data x fsdp) mesh (batch split over all devices,
parameters replicated or split over "fsdp"), per-step keys fold_in(seed key, step), Orbax resume, metrics and
image grids.
Whether a step runs either regulariser is a traced flag (`loop.when`): the loop compiles one program, not one
per combination (static flags, as the benchmarks pass, select one variant).
`config.init_from` fine-tunes a saved generator instead of starting from random weights (`load_init`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxgeal import checkpoint, images, metric_writers, sharding, storage
from jaxgeal.losses import stylegan2 as losses
from jaxgeal.models import stylegan2
from jaxgeal.trainers import loop


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  g: Any  # generator params
  d: Any  # discriminator params
  g_ema: Any  # EMA of the generator params
  noises: Any  # the generator's fixed noise buffers (for visuals / export)
  g_opt: Any
  d_opt: Any
  mean_path_length: jax.Array
  rng: jax.Array


@dataclasses.dataclass(frozen=True)
class Models:
  G: stylegan2.Generator
  D: stylegan2.Discriminator


def build_models(config) -> tuple[Models, dict, dict]:
  m = config.model
  channels = [list(x) for x in (m.channels or stylegan2.default_channels(m.channel_multiplier, m.size))]
  gcfg = dict(
    size=m.size, style_dim=m.style_dim, n_mlp=m.n_mlp, channels=channels, lr_mlp=m.lr_mlp, blur_kernel=[1, 3, 3, 1]
  )
  dcfg = dict(size=m.size, channels=channels, stddev_feat=1, blur_kernel=[1, 3, 3, 1])
  dtype = jnp.dtype(config.get("dtype", "float32"))
  G, D = stylegan2.generator_from_config(gcfg, dtype=dtype), stylegan2.discriminator_from_config(dcfg, dtype=dtype)
  return Models(G, D), gcfg, dcfg


def make_optimizers(config):
  o = config.optim
  g_ratio = o.g_reg_every / (o.g_reg_every + 1)
  d_ratio = o.d_reg_every / (o.d_reg_every + 1)
  g_tx = optax.adam(o.lr * g_ratio, b1=0.0**g_ratio, b2=0.99**g_ratio, eps=1e-8)
  d_tx = optax.adam(o.lr * d_ratio, b1=0.0**d_ratio, b2=0.99**d_ratio, eps=1e-8)
  return g_tx, d_tx


def init_state(models: Models, config, g_tx, d_tx) -> TrainState:
  """Fresh weights, or (config.init_from) the g / g_ema / d of a saved StyleGAN2 to fine-tune on new data:
  fresh Adam moments and path-length mean, step 0 (a new run, not a resume)."""
  k_g, k_d, k_train = jax.random.split(jax.random.PRNGKey(config.seed), 3)
  z = jnp.zeros((1, models.G.style_dim))
  # Jitted: one compile instead of hundreds of op-by-op dispatches (eager init compiled ~900 small programs).
  gv = jax.jit(lambda k: models.G.init(k, z, randomize_noise=False))(k_g)
  dv = jax.jit(lambda k: models.D.init(k, jnp.zeros((1, models.G.size, models.G.size, 3))))(k_d)
  g, g_ema, d, noises = gv["params"], jax.tree_util.tree_map(jnp.copy, gv["params"]), dv["params"], gv["noises"]
  if config.get("init_from"):
    g, g_ema, d, noises = load_init(config.init_from, {"g": gv, "g_ema": gv, "d": dv})
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    g=g,
    d=d,
    g_ema=g_ema,
    noises=noises,
    g_opt=g_tx.init(g),
    d_opt=d_tx.init(d),
    mean_path_length=jnp.zeros(()),
    rng=k_train,
  )


def load_init(path, like: dict):
  """(g, g_ema, d params, noises) of the model directory `path`, checked leaf by leaf against `like`
  ({name: variables} of the models being trained). This trainer exports all three; a directory holding only
  g_ema (a shipped or converted generator) starts g from it and d from the seed's random weights."""
  saved = checkpoint.load_models(path)
  if "g_ema" not in saved:
    raise ValueError(
      f"init_from={path} holds {sorted(saved)}, no generator 'g_ema': point it at a model "
      "directory exported by jaxgeal.trainers.stylegan2 (<workdir>/model) or jaxgeal.convert"
    )
  if "d" not in saved:
    logging.warning("init_from=%s has no discriminator 'd': fine-tuning starts it from random weights", path)
  out = {}
  for name, want in like.items():
    have = saved.get(name, saved["g_ema"] if name == "g" else None)
    if have is None:
      out[name] = want
      continue
    have = have[2]
    if jax.tree_util.tree_structure(want) != jax.tree_util.tree_structure(have):
      raise ValueError(
        f"init_from={path}: {name}'s parameters differ in structure from config.model's "
        "(another number of layers or resolution): set config.model to the saved model's"
      )
    for (kp, a), (_, b) in zip(*(jax.tree_util.tree_flatten_with_path(t)[0] for t in (want, have))):
      if a.shape != b.shape:
        raise ValueError(
          f"init_from={path}: {name}{jax.tree_util.keystr(kp)} has shape {b.shape}, the "
          f"config's model needs {a.shape}: set config.model to the saved model's shape"
        )
    out[name] = jax.tree_util.tree_map(jnp.asarray, have)
  return out["g"]["params"], out["g_ema"]["params"], out["d"]["params"], out["g_ema"]["noises"]


def _mixing_styles(key, batch, style_dim, n_latent, prob):
  """Two z and a crossover index: with probability `prob` uniform in [1, n_latent - 1], else n_latent
  (no mixing), as rosinality's mixing_noise + the generator's random inject index."""
  kz, kc, ki = jax.random.split(key, 3)
  z = jax.random.normal(kz, (2, batch, style_dim))
  mix = jax.random.uniform(kc) < prob
  inject = jnp.where(mix, jax.random.randint(ki, (), 1, n_latent), n_latent)
  return [z[0], z[1]], inject


def path_length_penalty(
  G: stylegan2.Generator, g_params, noises, key, n: int, mean_path_length, mixing: float, mesh=None
):
  """Path-length penalty of `n` fresh samples (style mixing with probability `mixing`, random per-layer noise):
  (penalty, new running mean, path lengths (n,)), all draws from `key`.

  J is taken w.r.t. the W+ latents, but the latents stay a function of g_params: the penalty's gradient reaches
  the mapping network too, as rosinality's train.py (g_path_regularize, create_graph=True through the latents
  the generator returned; rosinality/stylegan2-pytorch, train.py, commit bef283a1c24087da704d16c30abc8e36e63efa0e)
  and NVIDIA's (stylegan2-ada-pytorch, training/loss.py: pl_grads w.r.t. gen_ws of the mapping network).
  """
  k_style, k_synth, k_y = jax.random.split(key, 3)
  styles, inject = _mixing_styles(k_style, n, G.style_dim, G.n_latent, mixing)
  if mesh is not None:
    styles = [sharding.constrain_batch(s, mesh) for s in styles]
  variables = {"params": g_params, "noises": noises}
  # The generator's own mapping and mixing; its image is unused (dropped by XLA under jit).
  _, latents = G.apply(variables, styles, inject_index=inject, randomize_noise=False, return_latents=True)
  synth = lambda lat: G.apply(variables, lat, rngs={"noise": k_synth}, method=G.synthesis)
  y = jax.random.normal(k_y, (n, G.size, G.size, 3), latents.dtype)
  pen, new_mean, lengths, _ = losses.g_path_regularize(synth, latents, y, mean_path_length)
  return pen, new_mean, lengths


def make_train_step(models: Models, config, mesh, g_tx, d_tx):
  G, D = models.G, models.D
  o = config.optim
  batch = config.batch_size
  path_batch = max(1, batch // o.path_batch_shrink)
  ema = 0.5 ** (32 / (10 * 1000))

  def generate(g_params, noises, key, n):
    k_style, k_noise = jax.random.split(key)
    styles, inject = _mixing_styles(k_style, n, G.style_dim, G.n_latent, o.mixing)
    styles = [sharding.constrain_batch(s, mesh) for s in styles]
    g_params, noises = sharding.gather((g_params, noises), mesh)  # FSDP: whole weights, batch-split compute
    return G.apply({"params": g_params, "noises": noises}, styles, inject_index=inject, rngs={"noise": k_noise})

  def d_apply(d_params, x):
    return D.apply({"params": sharding.gather(d_params, mesh)}, x)

  def step(state: TrainState, real, regularize_d: bool, regularize_g: bool):
    key = jax.random.fold_in(state.rng, state.step)
    k_d, k_g, k_pl = jax.random.split(key, 3)
    real = sharding.constrain_batch(real, mesh)
    metrics = {}

    # Discriminator: logistic loss on real vs generated (generator not differentiated).
    fake = jax.lax.stop_gradient(generate(state.g, state.noises, k_d, batch))

    def d_loss_fn(d_params):
      real_pred, fake_pred = d_apply(d_params, real), d_apply(d_params, fake)
      return losses.d_logistic_loss(real_pred, fake_pred), (real_pred, fake_pred)

    (d_loss, (real_pred, fake_pred)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state.d)
    d_params, d_opt = loop.apply_gradients(d_tx, d_grads, state.d_opt, state.d)
    metrics.update(d_loss=d_loss, real_score=jnp.mean(real_pred), fake_score=jnp.mean(fake_pred))

    def r1_update(d_params, d_opt):  # lazy R1 (§3.2): every d_reg_every steps, weighted by r1/2 * d_reg_every
      def r1_fn(d_params):
        pen, _ = losses.d_r1_loss(lambda x: d_apply(d_params, x), real)
        return o.r1 / 2 * pen * o.d_reg_every, pen

      (_, r1), r1_grads = jax.value_and_grad(r1_fn, has_aux=True)(d_params)
      return *loop.apply_gradients(d_tx, r1_grads, d_opt, d_params), r1

    no_r1 = lambda d_params, d_opt: (d_params, d_opt, jnp.zeros((), jnp.float32))
    d_params, d_opt, metrics["r1"] = loop.when(regularize_d, r1_update, no_r1, d_params, d_opt)

    # Generator: non-saturating loss through the updated discriminator.
    def g_loss_fn(g_params):
      return losses.g_nonsaturating_loss(d_apply(d_params, generate(g_params, state.noises, k_g, batch)))

    g_loss, g_grads = jax.value_and_grad(g_loss_fn)(state.g)
    g_params, g_opt = loop.apply_gradients(g_tx, g_grads, state.g_opt, state.g)
    metrics["g_loss"] = g_loss

    def pl_update(g_params, g_opt):  # path length (§3.2, eq. 4) every g_reg_every steps on a shrunk batch
      def pl_fn(g_params):
        pen, new_mean, lengths = path_length_penalty(
          G, *sharding.gather((g_params, state.noises), mesh), k_pl, path_batch, state.mean_path_length, o.mixing, mesh
        )
        return o.path_regularize * o.g_reg_every * pen, (pen, new_mean, lengths)

      (_, (pl, mean_path_length, lengths)), pl_grads = jax.value_and_grad(pl_fn, has_aux=True)(g_params)
      g_params, g_opt = loop.apply_gradients(g_tx, pl_grads, g_opt, g_params)
      return g_params, g_opt, dict(path_penalty=pl, mean_path_length=mean_path_length, path_length=jnp.mean(lengths))

    def no_pl(g_params, g_opt):
      zero = jnp.zeros((), jnp.float32)
      return g_params, g_opt, dict(path_penalty=zero, mean_path_length=state.mean_path_length, path_length=zero)

    g_params, g_opt, pl_metrics = loop.when(regularize_g, pl_update, no_pl, g_params, g_opt)
    mean_path_length = pl_metrics["mean_path_length"]
    metrics.update(pl_metrics)

    g_ema = jax.tree_util.tree_map(lambda e, p: ema * e + (1 - ema) * p, state.g_ema, g_params)
    new = state.replace(
      step=state.step + 1,
      g=g_params,
      d=d_params,
      g_ema=g_ema,
      g_opt=g_opt,
      d_opt=d_opt,
      mean_path_length=mean_path_length,
    )
    return new, metrics

  return step


def make_visualize(models: Models, config):
  z = jax.random.normal(jax.random.PRNGKey(config.seed + 7), (config.n_vis, models.G.style_dim))

  @jax.jit
  def sample(state):
    return models.G.apply({"params": state.g_ema, "noises": state.noises}, z, randomize_noise=False)

  return lambda state: {"samples": images.make_grid(sharding.to_host(sample(state)))}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, data=None) -> TrainState:
  """Train on `data(start_step)` (an iterator of {"image": (B, H, W, 3)} batches in [-1, 1] beginning at
  that step) or, by default, on the dataset config.data names."""
  workdir = storage.as_path(workdir)
  mesh = sharding.mesh_from_config(config)
  shardings = lambda tree: sharding.state_shardings(mesh, tree, sharding.min_shard_size(config))
  models, gcfg, dcfg = build_models(config)
  g_tx, d_tx = make_optimizers(config)
  manager = checkpoint.training_manager(workdir, max_to_keep=config.keep_checkpoints)
  state = loop.restore_or_init(
    manager,
    lambda: init_state(models, config, g_tx, d_tx),
    lambda: init_state(models, config, g_tx, d_tx),
    shardings,
    config,
  )
  state = jax.device_put(state, shardings(state))
  start = int(state.step)
  if data is None:
    from jaxgeal import input_pipeline  # only needed for real data

    data = lambda start_step: input_pipeline.training_images(
      config.data, config.batch_size, seed=config.seed, start_step=start_step
    )
  data = data(start)
  step_fn = sharding.jit_step(
    make_train_step(models, config, mesh, g_tx, d_tx),
    mesh,
    in_shardings=(
      shardings(state),
      sharding.batch_sharding(mesh),
      sharding.replicated(mesh),
      sharding.replicated(mesh),
    ),
    out_shardings=(shardings(state), sharding.replicated(mesh)),
    donate_argnums=(0,),
  )
  o = config.optim

  def one_step(state, step):
    real = sharding.put_batch(next(data)["image"], mesh)
    # rosinality regularises at iterations i % k == 0, counting from 0.
    reg_d, reg_g = step % o.d_reg_every == 0, step % o.g_reg_every == 0
    state, metrics = step_fn(state, real, np.bool_(reg_d), np.bool_(reg_g))  # traced flags: one program
    skip = (set() if reg_d else {"r1"}) | (set() if reg_g else {"path_penalty", "mean_path_length", "path_length"})
    return state, {k: v for k, v in metrics.items() if k not in skip}

  loop.log_parameters("stylegan2", {"g": state.g, "d": state.d})
  writer = metric_writers.create_default_writer(workdir, resume_step=start)
  state = loop.run(
    name="stylegan2",
    state=state,
    step_fn=one_step,
    start_step=start,
    total_steps=config.total_steps,
    manager=manager,
    writer=writer,
    log_every=config.log_every,
    ckpt_every=config.ckpt_every,
    vis_every=config.vis_every,
    visualize=make_visualize(models, config),
  )
  checkpoint.save_models(
    workdir / "model",
    {
      "g_ema": ("generator", gcfg, {"params": state.g_ema, "noises": state.noises}),
      "g": ("generator", gcfg, {"params": state.g, "noises": state.noises}),
      "d": ("discriminator", dcfg, {"params": state.d}),
    },
    source="jaxgeal.trainers.stylegan2",
    overwrite=True,
  )
  writer.close()
  return state


def base_config() -> ml_collections.ConfigDict:
  """rosinality train.py defaults at 256 px, config F."""
  c = ml_collections.ConfigDict()
  c.trainer = "stylegan2"
  c.seed = 0
  c.model = ml_collections.ConfigDict(
    dict(
      size=256,
      style_dim=512,
      n_mlp=8,
      channel_multiplier=2,
      lr_mlp=0.01,
      channels=ml_collections.config_dict.placeholder(tuple),
    )
  )
  c.optim = ml_collections.ConfigDict(
    dict(lr=0.002, r1=10.0, path_regularize=2.0, path_batch_shrink=2, d_reg_every=16, g_reg_every=4, mixing=0.9)
  )
  c.data = ml_collections.ConfigDict(dict(source="", size=256))
  c.batch_size = 16
  c.num_devices = ml_collections.config_dict.placeholder(int)  # None: all local devices
  c.dtype = "float32"  # activations / matmuls / convs: float32 or bfloat16 (params, optimiser state: float32)
  # The device mesh (jaxgeal/sharding.py): mesh.fsdp devices hold one copy of the parameters and optimiser state
  # split between them (FSDP), the other axis ("data", devices / fsdp) replicates it; 1 = data parallel. The
  # batch is split over all devices either way. Tensors under min_shard_size elements stay replicated.
  c.mesh = ml_collections.ConfigDict(dict(fsdp=1, min_shard_size=2**14))
  c.total_steps = 800_000
  c.log_every = 100
  c.vis_every = 5_000
  c.ckpt_every = 10_000
  c.keep_checkpoints = 3
  c.n_vis = 16
  c.init_from = ml_collections.config_dict.placeholder(str)  # a saved generator (model dir) to fine-tune
  return c
