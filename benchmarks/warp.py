"""Micro-benchmark of the STN sampling ops (`jaxgeal.ops.warp.grid_sample`, `jaxgeal.ops.mipmap.mipmap_warp`).

Times the jitted forward pass, and forward + backward (gradients w.r.t. image and grid, as in GANgealing
training), for the training shapes of Peebles et al. (CVPR 2022): a 256 px image warped to a 128 px output
by a zooming-out similarity grid, batch 1 and 40. Prints one JSON object per configuration.

  python benchmarks/warp.py [--batch_sizes 1,40] [--repeats 5] [--in_size 256] [--out_size 128]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxgeal.ops import mipmap, warp


def _time(fn, *args, repeats: int) -> tuple[float, float]:
  """(compile + first run, median of `repeats` further runs) in milliseconds."""
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1e3 * first, 1e3 * float(np.median(times))


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
  parser.add_argument("--batch_sizes", default="1,40")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--in_size", type=int, default=256)
  parser.add_argument("--out_size", type=int, default=128)
  return parser


def main():
  args = build_parser().parse_args()

  ops = {
    "grid_sample": lambda img, grid: warp.grid_sample(img, grid, "border"),
    "mipmap_warp": lambda img, grid: mipmap.mipmap_warp(img, grid, "border", max_num_levels=3.5),
  }
  for batch in (int(b) for b in args.batch_sizes.split(",")):
    rng = np.random.default_rng(0)
    img = jnp.asarray(rng.normal(size=(batch, args.in_size, args.in_size, 3)).astype(np.float32))
    # A mild rotation + zoom-out, the regime where the mipmap levels matter.
    theta = warp.make_affine_matrix(*jnp.asarray(rng.normal(scale=0.2, size=(4, batch, 1)), jnp.float32))
    grid = warp.affine_grid(theta[:, 0], (args.out_size, args.out_size))
    for name, op in ops.items():
      fwd = jax.jit(op)
      grad = jax.jit(jax.grad(lambda i, g, op=op: jnp.sum(op(i, g) ** 2), argnums=(0, 1)))
      compile_fwd, fwd_ms = _time(fwd, img, grid, repeats=args.repeats)
      compile_bwd, bwd_ms = _time(grad, img, grid, repeats=args.repeats)
      print(
        json.dumps(
          {
            "op": name,
            "batch": batch,
            "in": args.in_size,
            "out": args.out_size,
            "device": str(jax.devices()[0]),
            "forward_ms": round(fwd_ms, 3),
            "forward_backward_ms": round(bwd_ms, 3),
            "first_call_ms": round(compile_fwd, 1),
            "first_call_grad_ms": round(compile_bwd, 1),
          }
        ),
        flush=True,
      )


if __name__ == "__main__":
  main()
