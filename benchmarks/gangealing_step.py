"""GANgealing speed: training steps/s (the whole jitted step: two generator passes, STN, perceptual loss,
backward into the STN and the target coefficients, Adam, EMA) and congealing images/s (the STN forward from
real_size to flow_size), at the CPU-sized `tiny` config and at the paper config (random weights: frozen
256 px generator, VGG16 vgg_ssl loss, flow_size 128 STN). Prints one JSON object.

  .venv/bin/python benchmarks/gangealing_step.py                       # tiny and paper, batch 1
  .venv/bin/python benchmarks/gangealing_step.py --configs paper --batch_size 40 --micro_batch_size 5

The PyTorch original on a 2-core CPU (paper config, batch 1): 10.9 s per training step, 1.8 congealed
images/s at 256 -> 128 px. Compare ratios taken in one run only: timings here vary up to 2x run to run.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp

from jaxgeal import sharding
from jaxgeal.models import lpips
from jaxgeal.trainers import config_variants
from jaxgeal.trainers import gangealing as trainer

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_config(variant):
  c = config_variants.load_config(f"{REPO / 'configs' / 'cats.py'}:{variant or ''}")
  c.generator.checkpoint = None  # random frozen generator of the config's size
  return c


def random_perceptual(kind):
  if kind == "mse":
    return trainer.gg_losses.MSEDistance()
  module = lpips.LPIPS(lpips=(kind == "lpips"))
  x = jnp.zeros((1, 64, 64, 3))
  variables = jax.jit(lambda k: module.init(k, x, x))(jax.random.PRNGKey(0))
  return lpips.make_perceptual_loss(kind, variables)


def timed(fn, repeats):
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times), first


def bench(variant, batch, micro, repeats, infer_batch):
  c = load_config(None if variant == "paper" else variant)
  c.batch_size, c.micro_batch_size = batch, micro or batch
  c.ll.pca_samples, c.ll.pca_batch = 4096, 1024  # PCA is setup, not the step: keep it short here
  mesh = sharding.make_mesh(1)
  G, gen_vars, gcfg = trainer.load_generator(c)
  perceptual = random_perceptual(c.perceptual.kind)
  models = trainer.build_models(c, G, gcfg)
  stn_tx, ll_tx, stn_sched, ll_sched = trainer.make_optimizers(c)
  state = trainer.init_state(models, c, gen_vars, perceptual, stn_tx, ll_tx)
  step = jax.jit(trainer.make_train_step(models, c, mesh, stn_tx, ll_tx, stn_sched, ll_sched))
  holder = {"state": state}

  def one():
    holder["state"], m = step(holder["state"], gen_vars, perceptual)
    return m["total"]

  step_s, step_first = timed(one, repeats)

  x = jax.random.uniform(jax.random.PRNGKey(1), (infer_batch, c.real_size, c.real_size, 3), minval=-1, maxval=1)
  congeal = jax.jit(lambda p, x: trainer.stn_lib.apply_for_training(models.stn, p, x, padding_mode="border").image)
  infer_s, _ = timed(lambda: congeal(state.stn_ema, x), repeats)
  return {
    "config": variant,
    "batch": batch,
    "micro_batch": c.micro_batch_size,
    "gen_size": G.size,
    "flow_size": c.stn.flow_size,
    "perceptual": c.perceptual.kind,
    "train_step_s": step_s,
    "train_steps_per_s": 1 / step_s,
    "train_images_per_s": batch / step_s,
    "first_step_s_incl_compile": step_first,
    "congeal_batch": infer_batch,
    "congeal_images_per_s": infer_batch / infer_s,
    "congeal_resolution": f"{c.real_size}->{c.stn.flow_size}",
  }


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
  )
  p.add_argument("--configs", default="tiny,paper")
  p.add_argument("--batch_size", type=int, default=1)
  p.add_argument("--micro_batch_size", type=int, default=None)
  p.add_argument("--congeal_batch_size", type=int, default=8, help="images per congealing batch")
  p.add_argument("--repeats", type=int, default=3)
  return p


def main():
  args = build_parser().parse_args()
  results = []
  for variant in args.configs.split(","):
    results.append(bench(variant, args.batch_size, args.micro_batch_size, args.repeats, args.congeal_batch_size))
    print(json.dumps(results[-1]), flush=True)
  print(
    json.dumps(
      {
        "benchmark": "gangealing",
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "results": results,
      },
      indent=1,
    )
  )


if __name__ == "__main__":
  main()
