"""StyleGAN2 generator speed: forward images/s, forward+backward (weights: training; latents only: GANgealing's
frozen generator) for each modulated-conv implementation, at several sizes. Prints one JSON object.

  .venv/bin/python benchmarks/stylegan2.py --sizes 64,256 --batch_sizes 1 --impls all

Config F widths (channel multiplier 2, style_dim 512, 8 mapping layers) with random weights. Timings are the
median of `--repeats` runs after one compile + one warm-up run; compare ratios taken in one run only.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp

from jaxgeal.models import stylegan2
from jaxgeal.ops import modulated_conv


def _time(fn, *args, repeats: int):
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  compile_s = time.perf_counter() - t0
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times), compile_s


def bench(size: int, batch: int, impl: str, repeats: int, modes):
  G = stylegan2.Generator(size=size, modconv_impl=impl)
  z = jax.random.normal(jax.random.PRNGKey(0), (batch, 512))
  v = jax.jit(lambda k: G.init(k, z, randomize_noise=False))(jax.random.PRNGKey(1))
  noise_rng = jax.random.PRNGKey(2)
  out = {"size": size, "batch": batch, "impl": impl}

  if "fwd" in modes:
    fwd = jax.jit(lambda v, z: G.apply(v, z, rngs={"noise": noise_rng}))
    t, c = _time(fwd, v, z, repeats=repeats)
    out.update(fwd_s=t, fwd_images_per_s=batch / t, fwd_compile_s=c)
  if "bwd_latent" in modes:
    # GANgealing: gradients reach the target latent through the frozen generator; no weight gradients.
    w = G.apply(v, z, method=G.mapping)
    latent = jnp.repeat(w[:, None], G.n_latent, axis=1)
    f = jax.jit(jax.grad(lambda lat: jnp.mean(G.apply(v, lat, rngs={"noise": noise_rng}, method=G.synthesis))))
    t, c = _time(f, latent, repeats=repeats)
    out.update(fwd_bwd_latent_s=t, fwd_bwd_latent_images_per_s=batch / t)
  if "bwd_params" in modes:
    f = jax.jit(jax.grad(lambda p, z: jnp.mean(G.apply({**v, "params": p}, z, rngs={"noise": noise_rng}))))
    t, c = _time(f, v["params"], z, repeats=repeats)
    out.update(fwd_bwd_params_s=t, fwd_bwd_params_images_per_s=batch / t)
  return out


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
  )
  p.add_argument("--sizes", default="64,256")
  p.add_argument("--batch_sizes", default="1")
  p.add_argument("--impls", default="all", help="comma list of " + ",".join(modulated_conv.IMPLS) + " or all")
  p.add_argument("--modes", default="fwd,bwd_latent,bwd_params")
  p.add_argument("--repeats", type=int, default=3)
  return p


def main():
  args = build_parser().parse_args()
  impls = modulated_conv.IMPLS if args.impls == "all" else args.impls.split(",")
  modes = set(args.modes.split(","))
  results = []
  for size in map(int, args.sizes.split(",")):
    for batch in map(int, args.batch_sizes.split(",")):
      for impl in impls:
        results.append(bench(size, batch, impl, args.repeats, modes))
        print(json.dumps(results[-1]), flush=True)
  print(
    json.dumps(
      {
        "benchmark": "stylegan2_generator",
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "machine": platform.machine(),
        "default_impl": modulated_conv.DEFAULT_IMPL,
        "results": results,
      },
      indent=1,
    )
  )


if __name__ == "__main__":
  main()
