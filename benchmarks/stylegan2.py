"""StyleGAN2 speed: generator forward, forward + backward (into the latents only: GANgealing's frozen generator;
into the weights: training) for each modulated-conv implementation, and the whole training step (configs/
stylegan2_256.py: D and G iterations, with and without the lazy R1 / path-length regularisers) at a size and
batch. Per workload: seconds, images/s, the FLOPs XLA counts, achieved GFLOP/s and the fraction of the fp32
matmul peak measured in the same run (jaxgeal.throughput). Prints one JSON object.

  .venv/bin/python benchmarks/stylegan2.py --sizes 256 --batch_sizes 1,8 --impls all --modes fwd,train
  .venv/bin/python benchmarks/stylegan2.py --sizes 64 --modes fwd,bwd_latent,bwd_params --markdown out.md

Config F widths (channel multiplier 2, style_dim 512, 8 mapping layers) with random weights. Timings are the
median of `--repeats` runs after one compile + one warm-up run; compare ratios taken in one run only.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp

from jaxgeal import sharding, throughput
from jaxgeal.models import stylegan2
from jaxgeal.ops import modulated_conv
from jaxgeal.trainers import config_variants
from jaxgeal.trainers import stylegan2 as trainer

REPO = pathlib.Path(__file__).resolve().parents[1]
MODES = ("fwd", "bwd_latent", "bwd_params", "train")


def bench_generator(size: int, batch: int, impl: str, repeats: int, modes, peak: float) -> list[dict]:
  G = stylegan2.Generator(size=size, modconv_impl=impl)
  z = jax.random.normal(jax.random.PRNGKey(0), (batch, 512))
  v = jax.jit(lambda k: G.init(k, z, randomize_noise=False))(jax.random.PRNGKey(1))
  noise_rng = jax.random.PRNGKey(2)
  common = dict(size=size, batch=batch, impl=impl)
  rows = []

  def add(name, fn, *args):
    seconds, first = throughput.timed(fn, *args, repeats=repeats)
    flops = throughput.compiled_flops(fn, *args)
    name = f"G {name}, {size} px, batch {batch}, {impl}"
    rows.append(throughput.row(name, seconds, batch, flops, peak, first - seconds, mode=name, **common))

  if "fwd" in modes:
    add("fwd", jax.jit(lambda v, z: G.apply(v, z, rngs={"noise": noise_rng})), v, z)
  if "bwd_latent" in modes:
    # GANgealing: gradients reach the target latent through the frozen generator; no weight gradients.
    w = G.apply(v, z, method=G.mapping)
    latent = jnp.repeat(w[:, None], G.n_latent, axis=1)
    synth = lambda lat: jnp.mean(G.apply(v, lat, rngs={"noise": noise_rng}, method=G.synthesis))
    add("bwd_latent", jax.jit(jax.grad(synth)), latent)
  if "bwd_params" in modes:
    loss = lambda p, z: jnp.mean(G.apply({**v, "params": p}, z, rngs={"noise": noise_rng}))
    add("bwd_params", jax.jit(jax.grad(loss)), v["params"], z)
  return rows


def bench_training(size: int, batch: int, repeats: int, peak: float) -> list[dict]:
  """The StyleGAN2 training step of configs/stylegan2_256.py at `size` px (the default modulated conv): plain,
  and with both regularisers."""
  c = config_variants.load_config(str(REPO / "configs" / "stylegan2_256.py"))
  c.model.size, c.data.size, c.batch_size = size, size, batch
  models, _, _ = trainer.build_models(c)
  g_tx, d_tx = trainer.make_optimizers(c)
  state = trainer.init_state(models, c, g_tx, d_tx)
  step = jax.jit(trainer.make_train_step(models, c, sharding.make_mesh(1), g_tx, d_tx), static_argnums=(2, 3))
  real = jax.random.uniform(jax.random.PRNGKey(3), (batch, size, size, 3), minval=-1, maxval=1)
  rows = []
  for reg in (False, True):
    seconds, first = throughput.timed(lambda s, r, reg=reg: step(s, r, reg, reg)[1], state, real, repeats=repeats)
    flops = throughput.compiled_flops(step, state, real, reg, reg)
    name = f"training step, {size} px, batch {batch}" + (", R1 + path length" if reg else "")
    mode = "train_reg" if reg else "train"
    rows.append(throughput.row(name, seconds, batch, flops, peak, first - seconds, size=size, batch=batch, mode=mode))
  return rows


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
  )
  p.add_argument("--sizes", default="64,256")
  p.add_argument("--batch_sizes", default="1")
  p.add_argument("--impls", default="all", help="comma list of " + ",".join(modulated_conv.IMPLS) + " or all")
  p.add_argument("--modes", default="fwd,bwd_latent,bwd_params", help="comma list of " + ",".join(MODES))
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--markdown", default=None, help="also write the table to this markdown file")
  return p


def main(argv=None):
  args = build_parser().parse_args(argv)
  impls = modulated_conv.IMPLS if args.impls == "all" else args.impls.split(",")
  modes = set(args.modes.split(","))
  if modes - set(MODES):
    raise SystemExit(f"--modes: unknown {sorted(modes - set(MODES))}; choose from {', '.join(MODES)}")
  info = throughput.machine()
  peak = throughput.matmul_peak()
  rows = []
  for size in map(int, args.sizes.split(",")):
    for batch in map(int, args.batch_sizes.split(",")):
      new = [r for impl in impls for r in bench_generator(size, batch, impl, args.repeats, modes, peak["best"])]
      if "train" in modes:
        new += bench_training(size, batch, args.repeats, peak["best"])
      for r in new:
        print(json.dumps(r), flush=True)
      rows += new
  result = {
    "benchmark": "stylegan2",
    **info,
    "default_impl": modulated_conv.DEFAULT_IMPL,
    "matmul_peak_gflops_per_s": peak,
    "results": rows,
  }
  print(json.dumps(result, indent=1))
  if args.markdown:
    pathlib.Path(args.markdown).write_text(throughput.markdown(rows, "StyleGAN2", info))
  return result


if __name__ == "__main__":
  main()
