"""Swapping Autoencoder speed: the training step (one D + one G iteration on two batches, without and with the
lazy R1 update) and encode + swap images/s, for a config's networks with random weights. Prints one JSON object.

  .venv/bin/python benchmarks/swapae.py --configs swapae_church,swapae_demo --batch_sizes 1,8
  .venv/bin/python benchmarks/swapae.py --configs swapae_demo --batch_sizes 16 --modes step

`swapae_church` is the paper's 256 px model. The step's batch must be a multiple of its group_size: for batch
sizes below the config's group, the group is the batch (rounded up to even). Timings are the median of `--repeats`
runs after one compile + one warm-up run; compile seconds are reported apart. Compare ratios taken in one run
only: other jobs on the machine change absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform

import jax
import jax.numpy as jnp
import numpy as np

from jaxgeal import throughput
from jaxgeal.swap import SwappingAutoencoder
from jaxgeal.trainers import config_variants
from jaxgeal.trainers import swapae as trainer

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_config(name: str, batch: int):
  file, *variant = name.split(":", 1)  # e.g. swapae_church:tiny
  c = config_variants.load_config(":".join([str(REPO / "configs" / f"{file}.py"), *variant]))
  if c.trainer == "swapae_demo":
    c = c.swapae
  c.batch_size = c.micro_batch_size = batch
  c.group_size = min(c.group_size, max(2, batch + batch % 2))
  if batch % c.group_size:
    c.group_size = batch
  return c


def bench(name: str, batch: int, repeats: int, modes: set) -> dict:
  c = load_config(name, batch)
  size = c.model.crop_size
  out = {"config": name, "size": size, "batch": batch, "group_size": c.group_size}
  models = trainer.build_models(c)
  g_tx, d_tx = trainer.make_optimizers(c)
  state = trainer.init_state(models, c, g_tx, d_tx)
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)), jnp.float32)
  if "step" in modes and batch % 2 == 0:
    step = jax.jit(trainer.make_train_step(models, c, g_tx, d_tx), static_argnums=(3,))
    for reg in (False, True):
      t, first = throughput.timed(lambda s, a, b, reg=reg: step(s, a, b, reg)[1], state, x, x, repeats=repeats)
      key = "step_r1" if reg else "step"
      out.update({f"{key}_s": t, f"{key}_images_per_s": 2 * batch / t, f"{key}_compile_s": first - t})
  if "swap" in modes:
    ae = SwappingAutoencoder(models.config, {"params": state.E}, {"params": state.G})
    t, first = throughput.timed(lambda a: ae.swap(a, a[::-1]), x, repeats=repeats)
    out.update(encode_swap_s=t, encode_swap_images_per_s=batch / t, encode_swap_compile_s=first - t)
  return out


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
  )
  p.add_argument("--configs", default="swapae_church,swapae_demo")
  p.add_argument("--batch_sizes", default="1,8")
  p.add_argument("--modes", default="step,swap")
  p.add_argument("--repeats", type=int, default=3)
  return p


def main(argv=None):
  args = build_parser().parse_args(argv)
  results, load = [], [os.getloadavg()[0]]
  for name in args.configs.split(","):
    for batch in map(int, args.batch_sizes.split(",")):
      results.append(bench(name, batch, args.repeats, set(args.modes.split(","))))
      print(json.dumps(results[-1]), flush=True)
      load.append(os.getloadavg()[0])
  print(
    json.dumps(
      {
        "benchmark": "swapae",
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "machine": platform.machine(),
        "cpu": throughput.cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": load,  # other jobs on the machine: before the first and after each measurement
        "results": results,
      },
      indent=1,
    )
  )


if __name__ == "__main__":
  main()
