"""GANgealing speed: the training step (the whole jitted step: two generator passes, STN, perceptual loss,
backward into the STN and the target coefficients, Adam, EMA) and congealing (the STN forward from real_size to
flow_size, `--iters` similarity passes), at the CPU-sized `tiny` config and the paper config (random weights:
frozen 256 px generator, channel multiplier 2, similarity + flow STN at flow size 128). Per workload: seconds,
images/s, the FLOPs XLA counts for the compiled computation, achieved GFLOP/s and the fraction of the fp32 matmul
peak measured in the same run (jaxgeal.throughput); compile time apart.

  .venv/bin/python benchmarks/gangealing_step.py --configs paper --perceptual lpips --json
  .venv/bin/python benchmarks/gangealing_step.py --configs paper --batch_sizes 1,5 --iters 1,3 --markdown out.md

Congealing compiles with the XLA:CPU options `jaxgeal.align`'s Aligner uses (jaxgeal.xla_cpu; each row's
`compiler_options`); `--compare_xla_defaults` adds the same programs under XLA's defaults, timed alternately.

`--parts` adds where the training step's time goes: each part of the step jitted alone at the first batch size
(the generator's forward for the unaligned images; the targets G(c) forward + backward into the latent
learner; the STN forward + backward into its weights; the perceptual loss forward + backward into both images;
Adam + EMA), in the same row form, so each part's fraction of peak shows which op falls short.

`--startup` instead measures start-up with JAX's persistent compilation cache (jaxgeal.compile_cache): the
training step at the first batch size in two fresh processes sharing one new cache directory, seconds from
process start to the first step's result and the step's compile time, first (cold) and second (warm).

  .venv/bin/python benchmarks/gangealing_step.py --configs paper --perceptual lpips --startup

Compare ratios taken in one run only: other jobs on the machine change absolute times (the JSON records the
load average).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp

from jaxgeal import compile_cache, sharding, throughput, xla_cpu
from jaxgeal.models import lpips
from jaxgeal.ops import mipmap
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
  # Congealing compiles as jaxgeal.align's Aligner does (jaxgeal.xla_cpu's options); --compare_xla_defaults adds
  # the same programs under XLA's defaults, timed alternately with them.
  variants = [("", xla_cpu.compiler_options())]
  if args.compare_xla_defaults:
    variants.append((" (XLA defaults)", {}))
  for iters in [int(i) for i in args.iters.split(",") if i]:
    fn = lambda p, x, iters=iters: (
      trainer.stn_lib.apply_for_training(models.stn, p, x, padding_mode="border", iters=iters).image
    )
    congeals = [jax.jit(fn, compiler_options=options) for _, options in variants]
    timings = throughput.timed_alternately(congeals, (state.stn_ema, x), repeats=args.repeats)
    for (suffix, options), congeal, (seconds, first) in zip(variants, congeals, timings):
      flops = throughput.compiled_flops(congeal, state.stn_ema, x)
      name = f"congeal {base.real_size}->{base.stn.flow_size}, batch {n}, iters {iters}{suffix}"
      extra = dict(batch=n, iters=iters, compiler_options=options, **common)
      rows.append(throughput.row(name, seconds, n, flops, peak, first - seconds, **extra))
  return rows


def bench_parts(variant, args, peak) -> list[dict]:
  """The training step's parts (trainers.gangealing.sample_and_loss, then the update), each jitted alone with
  the frozen weights as arguments, at the first batch size; gradients only where the step takes them."""
  c = load_config(None if variant == "paper" else variant)
  c.perceptual.kind = kind = c.perceptual.kind if args.perceptual == "config" else args.perceptual
  batch = int(args.batch_sizes.split(",")[0])
  c.batch_size = c.micro_batch_size = batch
  c.ll.pca_samples, c.ll.pca_batch = 4096, 1024
  perceptual = random_perceptual(kind)
  G, gen_vars, gcfg = trainer.load_generator(c)
  models = trainer.build_models(c, G, gcfg)
  stn_tx, ll_tx, _, _ = trainer.make_optimizers(c)
  state = trainer.init_state(models, c, gen_vars, perceptual, stn_tx, ll_tx)
  down = lambda x: mipmap.downsample_to(x, models.flow_size)
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  z = jax.random.normal(jax.random.PRNGKey(1), (batch, models.ll.style_dim))

  unaligned_fn = jax.jit(lambda g, z: G.apply(g, z, rngs={"noise": k1}, return_latents=True))

  def target_fn(g, ll, w):
    latents = models.ll.apply({"params": ll, "pca": state.pca}, w, 0.5)
    return down(G.apply(g, latents, rngs={"noise": k2}, method=G.synthesis))

  target_bwd = jax.jit(lambda g, ll, w, ct: jax.vjp(lambda p: target_fn(g, p, w), ll)[1](ct))

  def stn_out(p, x, x_full):
    return trainer.stn_lib.apply_for_training(models.stn, p, x, x_full, padding_mode=models.padding_mode).image

  stn_bwd = jax.jit(jax.grad(lambda p, x, x_full, ct: jnp.vdot(stn_out(p, x, x_full), ct)))
  perc_bwd = jax.jit(jax.grad(lambda per, a, b: jnp.mean(per(a, b)), argnums=(1, 2)))

  def update(state, grads):
    params, opt = trainer.loop.apply_gradients(stn_tx, grads, state.stn_opt, state.stn)
    return params, opt, jax.tree_util.tree_map(lambda e, q: 0.99 * e + 0.01 * q, state.stn_ema, params)

  # Inputs of the right shapes (values do not change the time), so each part's first call is its compile.
  shapes = jax.eval_shape(unaligned_fn, gen_vars, z)
  unaligned = jax.random.uniform(k1, shapes[0].shape, minval=-1, maxval=1)
  wplus = jax.random.normal(k2, shapes[1].shape)
  target = aligned = jax.random.uniform(k2, (batch, models.flow_size, models.flow_size, 3), minval=-1, maxval=1)
  x_full = unaligned if models.sample_from_full_res else None
  grads = jax.tree_util.tree_map(jnp.ones_like, state.stn)
  parts = [
    ("G(w) forward: unaligned images", unaligned_fn, (gen_vars, z)),
    ("targets G(c) forward + backward into c", target_bwd, (gen_vars, state.ll, wplus[:, 0], target)),
    ("STN forward + backward", stn_bwd, (state.stn, down(unaligned), x_full, aligned)),
    (f"perceptual ({kind}) forward + backward", perc_bwd, (perceptual, aligned, target)),
    ("Adam + EMA", jax.jit(update), (state, grads)),
  ]
  rows = []
  for name, fn, fn_args in parts:
    seconds, first = throughput.timed(fn, *fn_args, repeats=args.repeats)
    flops = throughput.compiled_flops(fn, *fn_args)
    rows.append(throughput.row(f"part: {name}, batch {batch}", seconds, batch, flops, peak, first - seconds))
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
  p.add_argument("--no_peak", action="store_true", help="skip the matmul peak (fraction_of_peak: NaN)")
  p.add_argument("--compilation_cache", default="off", help="a persistent compilation cache directory (default off)")
  p.add_argument("--parts", action="store_true", help="also time the training step's parts (see above)")
  p.add_argument("--startup", action="store_true", help="measure first and second start (see above)")
  p.add_argument(
    "--compare_xla_defaults",
    action="store_true",
    help="also time congealing compiled with XLA's default options, alternating (jaxgeal.xla_cpu)",
  )
  return p


def startup(args) -> dict:
  """Two fresh processes, one training step each, sharing a new compilation cache: cold, then warm start."""
  config, batch = args.configs.split(",")[0], args.batch_sizes.split(",")[0]
  runs = []
  with tempfile.TemporaryDirectory() as cache:
    for start in ("first", "second"):
      cmd = [sys.executable, __file__, "--configs", config, "--perceptual", args.perceptual, "--batch_sizes", batch]
      cmd += ["--iters", "", "--repeats", "1", "--json", "--no_peak", "--compilation_cache", cache]
      t0 = time.perf_counter()
      out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
      seconds = time.perf_counter() - t0
      row = json.loads(out[out.index("{") :])["results"][0]
      runs.append({"start": start, "process_s": seconds, "compile_s": row["compile_s"], "step_s": row["seconds"]})
  first, second = runs
  return {
    "benchmark": "gangealing_step startup",
    **throughput.machine(),
    "config": config,
    "batch": int(batch),
    "perceptual": args.perceptual,
    "runs": runs,
    "second_over_first_process": second["process_s"] / first["process_s"],
    "second_over_first_compile": second["compile_s"] / first["compile_s"],
  }


def main(argv=None):
  args = build_parser().parse_args(argv)
  if args.startup:
    result = startup(args)
    print(json.dumps(result, indent=1))
    return result
  compile_cache.enable(args.compilation_cache)
  info = throughput.machine()
  peak = {"best": float("nan")} if args.no_peak else throughput.matmul_peak()
  rows = []
  for variant in args.configs.split(","):
    parts = bench_parts(variant, args, peak["best"]) if args.parts else []
    for r in bench_config(variant, args, peak["best"]) + parts:
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
