"""Swapping Autoencoder trainer (Park et al. 2020, §3 and appendix B; upstream
taesungp/swapping-autoencoder-pytorch, commit 6baa180f1184ee79a6b967f9d80ee0e02a979ac7,
optimizers/swapping_autoencoder_optimizer.py and models/swapping_autoencoder_model.py).

Upstream alternates one discriminator iteration and one generator iteration, each on its own batch (its first
iteration trains D). One step here is such a pair: a D update (logistic GAN on real / reconstruction / hybrid and
the patch co-occurrence GAN), every `R1_once_every`-th D update followed by the lazy R1 update on images and
crops (weight x R1_once_every), then an E + G update (L1 reconstruction, GAN on reconstruction and hybrid, patch
co-occurrence GAN) through the updated D; 2 x batch_size images per step. Adam (lr, betas (0, 0.99)); D's lr
and betas corrected by c = R1_once_every / (1 + R1_once_every) (StyleGAN2 appendix B).

Upstream splits each batch over its GPUs (DataParallel) and forms swap pairs and half-batch reconstructions
within each GPU's share: `group_size` (= batch_size / num_gpus of upstream's launcher) reproduces that, the
groups run side by side (vmap). `micro_batch_size` (a multiple of group_size) accumulates gradients over
micro-batches when the devices cannot hold a batch. Same plumbing as the other trainers: one jitted step on a
(data x fsdp) mesh, per-step keys fold_in(seed key, step), Orbax resume, metrics, image grids and a model
directory (E, G, D, Dpatch; what `python -m jaxgeal.convert swapae` writes) at the end. Whether a step runs R1
is a traced flag (`loop.when`): the loop compiles one program, not one with and one without R1.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxgeal import checkpoint, images, metric_writers, sharding, storage
from jaxgeal.losses import swapae as losses
from jaxgeal.models import swapae
from jaxgeal.trainers import loop

KINDS = {
  "E": "swapae_encoder",
  "G": "swapae_generator",
  "D": "swapae_discriminator",
  "Dpatch": "swapae_patch_discriminator",
}
# Upstream options a trained model records with its weights (what `jaxgeal.convert.swapae` keeps from opt.txt).
RECORDED_MODEL_OPTIONS = ("crop_size", "patch_size", "netG_use_noise")


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  E: Any  # encoder params
  G: Any  # generator params
  D: Any  # image discriminator params
  Dpatch: Any  # patch co-occurrence discriminator params
  g_opt: Any  # Adam over {"E", "G"} (upstream's "generator" parameters)
  d_opt: Any  # Adam over {"D", "Dpatch"}
  rng: jax.Array


@dataclasses.dataclass(frozen=True)
class Models:
  E: swapae.Encoder
  G: swapae.Generator
  D: Any
  P: swapae.PatchDiscriminator
  config: dict  # the model directory's config (widths, image size, training options)


def model_config(config: ml_collections.ConfigDict) -> dict:
  """The networks' constructor arguments from the config's upstream-named options, plus the image size and the
  training options, as a model directory records them."""
  out = swapae.widths_from_options(config.model.to_dict())
  out["options"] = {
    **{k: config.model[k] for k in RECORDED_MODEL_OPTIONS},
    **config.loss.to_dict(),
    **config.optim.to_dict(),
    "batch_size": config.batch_size,
  }
  return out


def build_models(config) -> Models:
  mc = model_config(config)
  dtype = jnp.dtype(config.get("dtype", "float32"))
  return Models(
    swapae.encoder_from_config(mc, dtype),
    swapae.generator_from_config(mc, dtype),
    swapae.discriminator_from_config(mc, dtype),
    swapae.patch_discriminator_from_config(mc, dtype),
    mc,
  )


def loss_options(config) -> losses.Options:
  fields = {f.name for f in dataclasses.fields(losses.Options)}
  return losses.Options(
    **{k: v for k, v in config.loss.items() if k in fields},
    patch_size=config.model.patch_size,
    crop_size=config.model.crop_size,
  )


def make_optimizers(config):
  o = config.optim
  c = o.R1_once_every / (1 + o.R1_once_every)
  g_tx = optax.adam(o.lr, b1=o.beta1, b2=o.beta2, eps=1e-8)
  d_tx = optax.adam(o.lr * c, b1=o.beta1**c, b2=o.beta2**c, eps=1e-8)
  return g_tx, d_tx


def init_state(models: Models, config, g_tx, d_tx) -> TrainState:
  keys = dict(zip(("E", "G", "D", "Dpatch", "train"), jax.random.split(jax.random.PRNGKey(config.seed), 5)))
  params = {
    name: jax.jit(lambda k, name=name: swapae.init_variables(name, models.config, k)["params"])(keys[name])
    for name in ("E", "G", "D", "Dpatch")
  }
  if config.get("init_from"):
    params = load_init(config.init_from, params)
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    **params,
    g_opt=g_tx.init({"E": params["E"], "G": params["G"]}),
    d_opt=d_tx.init({"D": params["D"], "Dpatch": params["Dpatch"]}),
    rng=keys["train"],
  )


def load_init(path, like: dict) -> dict:
  """The networks of the model directory `path` (a converted checkpoint or an earlier run's model/), checked
  leaf by leaf against `like` ({name: params}); networks it lacks (a test-time checkpoint has no D, Dpatch)
  keep their fresh weights."""
  saved = checkpoint.load_models(path)
  if "E" not in saved or "G" not in saved:
    raise ValueError(f"init_from={path} holds {sorted(saved)}, not a Swapping Autoencoder (E and G)")
  out = {}
  for name, want in like.items():
    if name not in saved:
      logging.warning("init_from=%s has no %s: fine-tuning starts it from random weights", path, name)
      out[name] = want
      continue
    have = saved[name][2]["params"]
    for (kp, a), (_, b) in zip(*(jax.tree_util.tree_flatten_with_path(t)[0] for t in (want, have)), strict=True):
      if a.shape != b.shape:
        raise ValueError(
          f"init_from={path}: {name}{jax.tree_util.keystr(kp)} has shape {b.shape}, config.model gives "
          f"{a.shape}: set config.model to the saved model's options"
        )
    out[name] = jax.tree_util.tree_map(jnp.asarray, have)
  return out


# -- the step -----------------------------------------------------------------------------------------------


def networks(models: Models, p: dict) -> losses.Networks:
  """The four networks with the params `p` ({"E", "G", "D", "Dpatch"}) closed over; fresh noise per decode."""
  P = models.P
  return losses.Networks(
    encode=lambda x: models.E.apply({"params": p["E"]}, x),
    decode=lambda s, t, key: models.G.apply({"params": p["G"]}, s, t, rngs={"noise": key}),
    discriminate=lambda x: models.D.apply({"params": p["D"]}, x),
    patch_features=lambda crops, aggregate: P.apply(
      {"params": p["Dpatch"]}, crops, aggregate, method=swapae.PatchDiscriminator.extract_features
    ),
    patch_discriminate=lambda f1, f2: P.apply(
      {"params": p["Dpatch"]}, f1, f2, method=swapae.PatchDiscriminator.discriminate_features
    ),
  )


def random_flip(key, x):
  """Upstream's training transform mirrors each image with probability 1/2."""
  flip = jax.random.bernoulli(key, 0.5, (x.shape[0],))
  return jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)


def make_train_step(models: Models, config, g_tx, d_tx):
  """step(state, real_d, real_g, regularize) -> (state, metrics): one D and one G iteration, and the lazy R1
  update where `regularize` holds (a bool, or a boolean array traced by jit: see loop.when). metrics["D_R1"]
  is 0 where R1 did not run."""
  opts = loss_options(config)
  group, micro = config.group_size, config.micro_batch_size
  n_micro = config.batch_size // micro
  num_crops = opts.patch_num_crops
  r1_every = config.optim.R1_once_every
  flip = config.data.random_flip

  def grouped(loss_fn, n_crop_calls):
    """Mean over the batch of `loss_fn(nets, group images, key, crop draws)`, the groups side by side, the
    micro-batches accumulated; returns (value, per-loss means) and the gradient w.r.t. the first argument."""

    def micro_loss(trained, frozen, x, key):
      nets = networks(models, {**frozen, **trained})
      x = x.reshape(-1, group, *x.shape[1:])
      keys = jax.random.split(key, x.shape[0])

      def one_group(xg, k):
        k_loss, k_crop = jax.random.split(k)
        return loss_fn(nets, xg, k_loss, losses.draw_crops(k_crop, n_crop_calls, group, num_crops))

      terms = jax.vmap(one_group)(x, keys)
      # Groups of equal size: the mean over groups of each group's mean is the batch mean (upstream's gather).
      return losses.total(terms), {k: jnp.mean(v) for k, v in terms.items()}

    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

    def run(trained, frozen, x, key):
      total, grads, terms = 0.0, None, None
      # A Python loop: XLA:CPU runs convolutions inside while loops up to 10x slower (see trainers/gangealing.py).
      for i in range(n_micro):
        (t, m), g = grad_fn(trained, frozen, x[i * micro : (i + 1) * micro], jax.random.fold_in(key, i))
        total, grads = total + t, g if grads is None else jax.tree_util.tree_map(jnp.add, grads, g)
        terms = m if terms is None else jax.tree_util.tree_map(jnp.add, terms, m)
      return jax.tree_util.tree_map(lambda v: v / n_micro, (total, grads, terms))

    return run

  def d_terms(nets, x, key, crops):
    return losses.discriminator_losses(nets, x, key, crops, opts)

  def r1_terms(nets, x, key, crops):
    del key
    return {k: v * r1_every for k, v in losses.r1_loss(nets, x, crops, opts).items()}

  def g_terms(nets, x, key, crops):
    terms, metrics = losses.generator_losses(nets, x, key, crops, opts)
    # L1_dist is a metric, not a loss: it rides along without a gradient.
    return {**terms, "L1_dist": jax.lax.stop_gradient(metrics["L1_dist"])}

  d_run, r1_run, g_run = grouped(d_terms, 3), grouped(r1_terms, 2), grouped(g_terms, 2)

  def step(state: TrainState, real_d, real_g, regularize: bool):
    k_d, k_r1, k_g, k_fd, k_fg = jax.random.split(jax.random.fold_in(state.rng, state.step), 5)
    if flip:
      real_d, real_g = random_flip(k_fd, real_d), random_flip(k_fg, real_g)
    eg = {"E": state.E, "G": state.G}
    d = {"D": state.D, "Dpatch": state.Dpatch}

    # Discriminator iteration (E and G frozen: no gradient w.r.t. them is taken).
    _, grads, d_losses = d_run(d, eg, real_d, k_d)
    d, d_opt = loop.apply_gradients(d_tx, grads, state.d_opt, d)
    metrics = dict(d_losses)

    def with_r1(d, d_opt):  # lazy R1 on the updated D, as upstream (a second optimizer step)
      _, grads, r1 = r1_run(d, eg, real_d, k_r1)
      d, d_opt = loop.apply_gradients(d_tx, grads, d_opt, d)
      return d, d_opt, r1["D_R1"] / r1_every  # the penalty itself, as upstream logs it

    without_r1 = lambda d, d_opt: (d, d_opt, jnp.zeros((), jnp.float32))
    d, d_opt, metrics["D_R1"] = loop.when(regularize, with_r1, without_r1, d, d_opt)
    metrics["D_total"] = sum(metrics.values())

    # Generator iteration: E and G through the updated D (frozen).
    _, grads, g_losses = g_run(eg, d, real_g, k_g)
    eg, g_opt = loop.apply_gradients(g_tx, grads, state.g_opt, eg)
    metrics.update(g_losses)
    new = state.replace(step=state.step + 1, **eg, **d, g_opt=g_opt, d_opt=d_opt)
    return new, metrics

  return step


# -- visuals ------------------------------------------------------------------------------------------------


def swap_grid(structure_images, texture_images, swapped) -> np.ndarray:
  """Upstream's structure-style grid: the texture images along the top, the structure images down the left,
  cell (i, j) = G(structure of i, texture of j). swapped: (n_structure, n_texture, H, W, 3)."""
  n_s, n_t = swapped.shape[:2]
  blank = -np.ones((1, *swapped.shape[2:]), np.float32)
  rows = [np.concatenate([blank, np.asarray(texture_images)])]
  rows += [np.concatenate([np.asarray(structure_images)[i : i + 1], np.asarray(swapped[i])]) for i in range(n_s)]
  return images.make_grid(np.concatenate(rows), nrow=n_t + 1)


def make_visualize(models: Models, vis_images: np.ndarray, seed: int):
  """Inputs over their reconstructions, and the swap grid of the visual batch (fixed noise)."""
  x = jnp.asarray(vis_images)
  n = x.shape[0]

  @jax.jit
  def render(state):
    p = {"E": state.E, "G": state.G, "D": state.D, "Dpatch": state.Dpatch}
    nets = networks(models, p)
    s, t = nets.encode(x)
    key = jax.random.PRNGKey(seed)
    rec = nets.decode(s, t, key)
    s_all = jnp.repeat(s, n, axis=0)
    t_all = jnp.tile(t, (n, 1))
    return rec, nets.decode(s_all, t_all, key).reshape(n, n, *x.shape[1:])

  def visualize(state):
    rec, swapped = sharding.to_host(render(state))
    return {
      "reconstruction": images.make_grid(np.concatenate([vis_images, rec]), nrow=n),
      "swap_grid": swap_grid(vis_images, vis_images, swapped),
    }

  return visualize


# -- the run ------------------------------------------------------------------------------------------------


def total_steps(config) -> int:
  """Steps (one D + one G iteration, 2 x batch_size images) to reach config.total_images."""
  return math.ceil(config.total_images / (2 * config.batch_size))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, data=None) -> TrainState:
  """Train on `data(first_batch)` (an iterator of {"image": (B, H, W, 3)} batches in [-1, 1] starting at that
  batch; each step takes two) or, by default, on the dataset config.data names."""
  workdir = storage.as_path(workdir)
  mesh = sharding.mesh_from_config(config)
  shardings = lambda tree: sharding.state_shardings(mesh, tree, sharding.min_shard_size(config))
  models = build_models(config)
  g_tx, d_tx = make_optimizers(config)
  manager = checkpoint.training_manager(workdir, max_to_keep=config.keep_checkpoints)
  init = lambda: init_state(models, config, g_tx, d_tx)
  state = loop.restore_or_init(manager, init, init, shardings, config)
  state = jax.device_put(state, shardings(state))
  start = int(state.step)
  if data is None:
    from jaxgeal import input_pipeline  # only needed for real data

    data = lambda first: input_pipeline.training_images(
      config.data, config.batch_size, seed=config.seed, start_step=first
    )
  vis_images = np.asarray(next(data(0))["image"][: config.n_vis])
  batches = data(2 * start)
  step_fn = sharding.jit_step(
    make_train_step(models, config, g_tx, d_tx),
    mesh,
    in_shardings=(
      shardings(state),
      sharding.batch_sharding(mesh),
      sharding.batch_sharding(mesh),
      sharding.replicated(mesh),
    ),
    out_shardings=(shardings(state), sharding.replicated(mesh)),
    donate_argnums=(0,),
  )
  r1_every = config.optim.R1_once_every

  def one_step(state, step):
    real_d = sharding.put_batch(next(batches)["image"], mesh)
    real_g = sharding.put_batch(next(batches)["image"], mesh)
    # Upstream's D-iteration counter starts at 1: R1 after D iterations R1_once_every, 2 R1_once_every, ...
    regularize = (step + 1) % r1_every == 0
    state, metrics = step_fn(state, real_d, real_g, np.bool_(regularize))  # traced: one program (loop.when)
    return state, metrics if regularize else {k: v for k, v in metrics.items() if k != "D_R1"}

  loop.log_parameters("swapae", {"E": state.E, "G": state.G, "D": state.D, "Dpatch": state.Dpatch})
  writer = metric_writers.create_default_writer(workdir, resume_step=start)
  state = loop.run(
    name="swapae",
    state=state,
    step_fn=one_step,
    start_step=start,
    total_steps=total_steps(config),
    manager=manager,
    writer=writer,
    log_every=config.log_every,
    ckpt_every=config.ckpt_every,
    vis_every=config.vis_every,
    visualize=make_visualize(models, vis_images, config.seed),
  )
  checkpoint.save_models(
    workdir / "model",
    {name: (KINDS[name], models.config, {"params": getattr(state, name)}) for name in KINDS},
    source="jaxgeal.trainers.swapae",
    overwrite=True,
  )
  writer.close()
  return state


def base_config() -> ml_collections.ConfigDict:
  """Upstream's defaults (option names kept) at 256 px with batch 16 on 4 GPUs (the church launcher)."""
  c = ml_collections.ConfigDict()
  c.trainer = "swapae"
  c.seed = 0
  c.model = ml_collections.ConfigDict(
    dict(
      crop_size=256,
      spatial_code_ch=8,
      global_code_ch=2048,
      netE_num_downsampling_sp=4,
      netE_num_downsampling_gl=2,
      netE_scale_capacity=1.0,
      netE_nc_steepness=2.0,
      netG_scale_capacity=1.0,
      netG_num_base_resnet_layers=2,
      netG_use_noise=True,
      netD_scale_capacity=1.0,
      netD_max_nc=512,  # upstream hard-codes D's 4x4 / 8x8 width
      netPatchD_scale_capacity=4.0,
      netPatchD_max_nc=384,
      netPatchD_pair_widths=(2048, 2048, 1024),  # upstream hard-codes the pair MLP
      patch_size=128,
      use_antialias=True,
    )
  )
  c.loss = ml_collections.ConfigDict(
    dict(
      lambda_L1=1.0,
      lambda_GAN=1.0,
      lambda_PatchGAN=1.0,
      lambda_R1=10.0,
      lambda_patch_R1=1.0,
      patch_min_scale=1 / 8,
      patch_max_scale=1 / 4,
      patch_num_crops=8,
      patch_use_aggregation=True,
    )
  )
  c.optim = ml_collections.ConfigDict(dict(lr=0.002, beta1=0.0, beta2=0.99, R1_once_every=16))
  c.data = ml_collections.ConfigDict(dict(source="", size=256, random_flip=True))
  c.batch_size = 16  # images per D iteration and per G iteration (upstream --batch_size)
  c.group_size = 4  # upstream's images per GPU (batch_size / num_gpus): swap pairs form within groups
  c.micro_batch_size = 16  # a multiple of group_size; smaller accumulates gradients
  c.num_devices = ml_collections.config_dict.placeholder(int)  # None: all local devices
  c.dtype = "float32"  # activations / matmuls / convs: float32 or bfloat16 (params, optimiser state: float32)
  # The device mesh (jaxgeal/sharding.py): mesh.fsdp devices hold one copy of the parameters and optimiser state
  # split between them (FSDP), the other axis ("data", devices / fsdp) replicates it; 1 = data parallel. The
  # batch is split over all devices either way. Tensors under min_shard_size elements stay replicated.
  c.mesh = ml_collections.ConfigDict(dict(fsdp=1, min_shard_size=2**14))
  c.total_images = 25_000_000  # upstream --total_nimgs (D and G iterations both count)
  c.log_every = 100  # steps of 2 x batch_size images
  c.vis_every = 1_000
  c.ckpt_every = 2_000
  c.keep_checkpoints = 3
  c.n_vis = 4
  c.init_from = ml_collections.config_dict.placeholder(str)  # a model directory to fine-tune
  return c
