"""Second GANgealing stage for clustering models (Peebles et al. 2022, §3.2, appendix B.2; upstream
train_cluster_classifier.py): a classifier that predicts, for a real image, which of the K heads (and, with
flips, whether mirrored) congeals it.

Labels come from GAN samples: with G, the trained STN (t_ema) and the learned targets (ll, psi = 0) frozen, each
sample's label is the argmin of the clustering loss over heads x flips (eq. 6), i.e. class k or k + K.
The classifier shares the similarity STN's trunk and is initialised from it; it is trained with cross-entropy,
Adam (1e-3) and the same decaying cosine schedule with epoch = step / period (no psi annealing).

  python -m jaxgeal.main --config=configs/cars_classifier.py --workdir=DIR
(config.gangealing_model: the `model/` directory stage 1 exported). The classifier is added to that export.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxgeal import checkpoint, metric_writers, schedules, sharding, storage
from jaxgeal.losses import gangealing as gg_losses
from jaxgeal.models import cluster_classifier as cls_lib
from jaxgeal.models import latent_learner as ll_lib
from jaxgeal.models import stn as stn_lib
from jaxgeal.models import stylegan2
from jaxgeal.ops import mipmap
from jaxgeal.trainers import gangealing as stage1
from jaxgeal.trainers import loop


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt: Any
  rng: jax.Array


@dataclasses.dataclass(frozen=True)
class Frozen:
  G: Any
  stn: Any
  ll: Any
  classifier: cls_lib.ResnetClassifier
  num_heads: int
  flips: bool
  flow_size: int
  padding_mode: str


def load_stage1(config):
  path = storage.as_path(config.gangealing_model)
  models = checkpoint.load_models(path)  # clear error naming the directory when missing
  for name in ("g_ema", "t_ema", "ll"):
    if name not in models:
      raise FileNotFoundError(
        f"{path} has no {name!r}: point gangealing_model at the model/ directory a "
        f"GANgealing run exported (or convert a published checkpoint with "
        f"python -m jaxgeal.convert gangealing SRC.pt DIR)"
      )
  return models


def label_and_loss(frozen: Frozen, params, variables, z, key):
  """Cross-entropy of the classifier on G(z) against the argmin assignment of the frozen clustering model."""
  G = frozen.G
  k1, k2 = jax.random.split(key)
  unaligned, wplus = G.apply(variables["g_ema"], z, return_latents=True, rngs={"noise": k1})
  targets = G.apply(
    variables["g_ema"], frozen.ll.apply(variables["ll"], wplus[:, 0], 0.0), rngs={"noise": k2}, method=G.synthesis
  )
  down = functools.partial(mipmap.downsample_to, size=frozen.flow_size)
  x = down(unaligned)
  run_stn = lambda a, b: stn_lib.apply_for_training(
    frozen.stn, variables["t_ema"]["params"], a, b, padding_mode=frozen.padding_mode
  )
  terms = gg_losses.gangealing_cluster_loss(
    run_stn,
    gg_losses.MSEDistance() if variables["perceptual"] is None else variables["perceptual"],
    x,
    None,
    down(targets),
    num_heads=frozen.num_heads,
    flips=frozen.flips,
    tv_weight=0.0,
    fi_weight=0.0,
  )
  labels = jax.lax.stop_gradient(terms["assignment"])
  logits = frozen.classifier.apply({"params": params}, x)
  loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
  accuracy = jnp.mean(jnp.argmax(logits, axis=1) == labels)
  return loss, {"loss": loss, "accuracy": accuracy}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  workdir = storage.as_path(workdir)
  mesh = sharding.mesh_from_config(config)
  shardings = lambda tree: sharding.state_shardings(mesh, tree, sharding.min_shard_size(config))
  nets = load_stage1(config)
  _, gcfg, g_vars = nets["g_ema"]
  _, scfg, t_vars = nets["t_ema"]
  _, lcfg, ll_vars = nets["ll"]
  K = lcfg["num_heads"]
  flips = bool(config.flips)
  dtype = jnp.dtype(config.get("dtype", "float32"))
  stn = stn_lib.from_config(scfg, dtype=dtype)
  classifier = cls_lib.ResnetClassifier(
    dtype=dtype,
    size=scfg["flow_size"],
    num_classes=K * (2 if flips else 1),
    supersize=scfg.get("supersize"),
    channels=tuple(tuple(c) for c in scfg["channels"]),
  )
  frozen = Frozen(
    G=stylegan2.generator_from_config(gcfg, dtype=dtype),
    stn=stn,
    ll=ll_lib.from_config(lcfg),
    classifier=classifier,
    num_heads=K,
    flips=flips,
    flow_size=scfg["flow_size"],
    padding_mode=config.stn.padding_mode,
  )
  perceptual = None if config.perceptual.kind == "mse" else stage1.make_perceptual(config)
  variables = sharding.put_replicated({"g_ema": g_vars, "t_ema": t_vars, "ll": ll_vars, "perceptual": perceptual}, mesh)
  sched = schedules.gangealing_lr_schedule(
    config.optim.cls_lr, 0, config.optim.period, t_mult=config.optim.t_mult, decay=config.optim.decay
  )
  tx = optax.adam(sched)

  @jax.jit  # one compile instead of an op-by-op init; the STN weights are an argument, not constants
  def init_with(stn_params):
    x = jnp.zeros((1, scfg["flow_size"], scfg["flow_size"], 3))
    params = classifier.init(jax.random.PRNGKey(config.seed), x)["params"]
    params = cls_lib.init_from_stn(params, stn_params)  # §3.2: start from the STN's trunk
    return TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt=tx.init(params), rng=jax.random.PRNGKey(config.seed + 1)
    )

  def init():
    return init_with(t_vars["params"])

  manager = checkpoint.training_manager(workdir, max_to_keep=config.keep_checkpoints)
  state = loop.restore_or_init(manager, init, init, shardings, config)
  state = jax.device_put(state, shardings(state))
  style_dim = lcfg["style_dim"]

  def train_step(state, variables):
    key = jax.random.fold_in(state.rng, state.step)
    kz, kl = jax.random.split(key)
    z = sharding.constrain_batch(jax.random.normal(kz, (config.batch_size, style_dim)), mesh)
    grads, metrics = jax.grad(label_and_loss, argnums=1, has_aux=True)(frozen, state.params, variables, z, kl)
    params, opt = loop.apply_gradients(tx, grads, state.opt, state.params)
    metrics["lr"] = sched(state.step)
    return state.replace(step=state.step + 1, params=params, opt=opt), metrics

  # Declared shardings keep the classifier and its Adam moments split as `shardings` says (FSDP); left to XLA's
  # propagation, the moments of small tensors came back split too, unlike their parameters.
  step = sharding.jit_step(
    train_step,
    mesh,
    in_shardings=(shardings(state), sharding.param_shardings(mesh, variables)),
    out_shardings=(shardings(state), sharding.replicated(mesh)),
    donate_argnums=(0,),
  )

  loop.log_parameters("cluster_classifier", state.params)
  writer = metric_writers.create_default_writer(workdir, resume_step=int(state.step))
  state = loop.run(
    name="cluster_classifier",
    state=state,
    step_fn=lambda s, _: step(s, variables),
    start_step=int(state.step),
    total_steps=config.total_steps,
    manager=manager,
    writer=writer,
    log_every=config.log_every,
    ckpt_every=config.ckpt_every,
  )
  ccfg = {
    "size": classifier.size,
    "supersize": classifier.supersize,
    "num_classes": classifier.num_classes,
    "channels": [list(c) for c in classifier.channels],
  }
  nets["classifier"] = ("cluster_classifier", ccfg, {"params": state.params})
  checkpoint.save_models(config.gangealing_model, nets, source="jaxgeal.trainers.cluster_classifier", overwrite=True)
  writer.close()
  return state


def classifier_config(c: ml_collections.ConfigDict, gangealing_model: str) -> ml_collections.ConfigDict:
  """Stage-2 settings on top of a stage-1 config (upstream: --iter 55000 --period 50000, cls_lr 1e-3)."""
  c.trainer = "cluster_classifier"
  c.gangealing_model = gangealing_model
  c.optim.cls_lr = 1e-3
  c.optim.period = 50_000
  c.total_steps = 55_000
  return c
