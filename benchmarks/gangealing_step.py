"""GANgealing speed: the training step (the whole jitted step: two generator passes, STN, perceptual loss,
backward into the STN and the target coefficients, Adam, EMA) and congealing (the STN forward from real_size to
flow_size, `--iters` similarity passes), at the CPU-sized `tiny` config and the paper config (random weights:
frozen 256 px generator, channel multiplier 2, similarity + flow STN at flow size 128). Per workload: seconds,
images/s, the FLOPs XLA counts for the compiled computation, achieved GFLOP/s and the fraction of the fp32 matmul
peak measured in the same run (jaxgeal.throughput); compile time apart.

  .venv/bin/python benchmarks/gangealing_step.py --configs paper --perceptual lpips --json
  .venv/bin/python benchmarks/gangealing_step.py --configs paper --batch_sizes 1,5 --iters 1,3 --markdown out.md

Compare ratios taken in one run only: other jobs on the machine change absolute times (the JSON records the
load average).
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp

from jaxgeal import sharding, throughput
from jaxgeal.models import lpips
from jaxgeal.trainers import config_variants
from jaxgeal.trainers import gangealing as trainer

REPO = pathlib.Path(__file__).resolve().parents[1]
PERCEPTUAL = ("config", "lpips", "vgg_ssl", "mse")


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


def bench_config(variant, args, peak) -> list[dict]:
  """The training step at each batch size and congealing at each iters, for one config."""
  rows = []
  base = load_config(None if variant == "paper" else variant)
  kind = base.perceptual.kind if args.perceptual == "config" else args.perceptual
  perceptual = random_perceptual(kind)
  G, gen_vars, gcfg = trainer.load_generator(base)
  mesh = sharding.make_mesh(1)
  common = dict(config=variant, perceptual=kind, gen_size=G.size, flow_size=base.stn.flow_size)
  state = None
  for batch in map(int, args.batch_sizes.split(",")):
    c = load_config(None if variant == "paper" else variant)
    c.perceptual.kind = kind
    c.batch_size, c.micro_batch_size = batch, args.micro_batch_size or batch
    c.ll.pca_samples, c.ll.pca_batch = 4096, 1024  # PCA is set-up, not the step: keep it short here
    models = trainer.build_models(c, G, gcfg)
    stn_tx, ll_tx, stn_sched, ll_sched = trainer.make_optimizers(c)
    state = trainer.init_state(models, c, gen_vars, perceptual, stn_tx, ll_tx)
    step = jax.jit(trainer.make_train_step(models, c, mesh, stn_tx, ll_tx, stn_sched, ll_sched))
    seconds, first = throughput.timed(
      lambda s, step=step: step(s, gen_vars, perceptual)[1]["total"], state, repeats=args.repeats
    )
    flops = throughput.compiled_flops(step, state, gen_vars, perceptual)
    name = f"train step, batch {batch}" + (f" (micro {c.micro_batch_size})" if c.micro_batch_size != batch else "")
    rows.append(throughput.row(name, seconds, batch, flops, peak, first - seconds, batch=batch, **common))
  n = args.congeal_batch_size
  x = jax.random.uniform(jax.random.PRNGKey(1), (n, base.real_size, base.real_size, 3), minval=-1, maxval=1)
  for iters in map(int, args.iters.split(",")):
    congeal = jax.jit(
      lambda p, x, iters=iters: (
        trainer.stn_lib.apply_for_training(models.stn, p, x, padding_mode="border", iters=iters).image
      )
    )
    seconds, first = throughput.timed(congeal, state.stn_ema, x, repeats=args.repeats)
    flops = throughput.compiled_flops(congeal, state.stn_ema, x)
    name = f"congeal {base.real_size}->{base.stn.flow_size}, batch {n}, iters {iters}"
    rows.append(throughput.row(name, seconds, n, flops, peak, first - seconds, batch=n, iters=iters, **common))
  return rows


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
  )
  p.add_argument("--configs", default="tiny,paper", help="comma-separated: tiny, paper (configs/cats.py variants)")
  p.add_argument("--perceptual", default="config", choices=PERCEPTUAL, help="the loss (default: the config's)")
  p.add_argument("--batch_sizes", default="1", help="training step batch sizes, comma-separated")
  p.add_argument("--micro_batch_size", type=int, default=None, help="default: the whole batch at once")
  p.add_argument("--congeal_batch_size", type=int, default=8, help="images per congealing batch")
  p.add_argument("--iters", default="1", help="congealing similarity passes, comma-separated")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--json", action="store_true", help="print only the final JSON object (no per-workload lines)")
  p.add_argument("--markdown", default=None, help="also write the table to this markdown file")
  return p


def main(argv=None):
  args = build_parser().parse_args(argv)
  info = throughput.machine()
  peak = throughput.matmul_peak()
  rows = []
  for variant in args.configs.split(","):
    for r in bench_config(variant, args, peak["best"]):
      rows.append(r)
      if not args.json:
        print(json.dumps(r), flush=True)
  result = {"benchmark": "gangealing_step", **info, "matmul_peak_gflops_per_s": peak, "results": rows}
  print(json.dumps(result, indent=1))
  if args.markdown:
    pathlib.Path(args.markdown).write_text(throughput.markdown(rows, "GANgealing training and congealing", info))
  return result


if __name__ == "__main__":
  main()
