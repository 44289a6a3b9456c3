"""Per-device memory of the training steps, data parallel vs FSDP (jaxgeal/sharding.py), on 1, 2, 4, 8 devices.

For each model and mesh the jitted training step is lowered and compiled, never run, on abstract inputs
(`jax.eval_shape` of the state: no weights are initialised) and XLA's `memory_analysis()` gives the bytes one
device needs for arguments, outputs (aliased with the donated state) and temporaries. `state_bytes` is what one
device holds of the training state (parameters, EMA, Adam moments), computed from the shardings; under FSDP on N
devices it should be close to 1/N of the data-parallel figure (the small replicated tensors are the rest).

  .venv/bin/python benchmarks/memory.py                       # StyleGAN2 1024 px and GANgealing paper config
  .venv/bin/python benchmarks/memory.py --models tiny --devices 1,2   # the CPU-sized configs (seconds)

Models: `stylegan2_1024` is configs/stylegan2_256.py (rosinality config F) with model.size = data.size = 1024
(no 1024 px config ships), batch 16, its plain step (no lazy regulariser); `gangealing_paper` is configs/cats.py
(frozen 256 px generator, VGG16 vgg_ssl loss, batch 40), random weights. On fake CPU devices (the device count is
set before JAX starts); XLA's LLVM optimisation level 0 speeds up compiling and does not change buffer sizes.
Writes --out (JSON) and the same path with .md (a table); prints the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
  )
  p.add_argument("--models", default="stylegan2_1024,gangealing_paper", help="comma-separated; or 'tiny'")
  p.add_argument("--devices", default="1,2,4,8", help="mesh sizes (comma-separated)")
  p.add_argument("--out", default=None, help="JSON file to write (and .md beside it); default: print only")
  return p


def _configs(name):
  from jaxgeal.trainers import config_variants

  if name in ("stylegan2_1024", "stylegan2_tiny"):
    c = config_variants.load_config(f"{REPO / 'configs' / 'stylegan2_256.py'}:{'tiny' if 'tiny' in name else ''}")
    if name == "stylegan2_1024":
      c.model.size = c.data.size = 1024
    c.batch_size = 16 if name == "stylegan2_1024" else 8
    return c
  c = config_variants.load_config(f"{REPO / 'configs' / 'cats.py'}:{'tiny' if 'tiny' in name else ''}")
  c.generator.checkpoint = None  # a random frozen generator of the config's size
  if name == "gangealing_tiny":
    c.batch_size = c.micro_batch_size = 8
  return c


def _abstract(tree, shardings):
  import jax

  return jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings)


def stylegan2_step(config, mesh):
  """(jitted step, abstract arguments, abstract state) of the StyleGAN2 trainer on `mesh`."""
  import jax
  import jax.numpy as jnp

  from jaxgeal import sharding
  from jaxgeal.trainers import stylegan2 as trainer

  models, _, _ = trainer.build_models(config)
  g_tx, d_tx = trainer.make_optimizers(config)
  state = jax.eval_shape(lambda: trainer.init_state(models, config, g_tx, d_tx))
  shardings = sharding.state_shardings(mesh, state, sharding.min_shard_size(config))
  size = config.model.size
  real = jax.ShapeDtypeStruct((config.batch_size, size, size, 3), jnp.float32, sharding=sharding.batch_sharding(mesh))
  step = sharding.jit_step(
    trainer.make_train_step(models, config, mesh, g_tx, d_tx),
    mesh,
    in_shardings=(shardings, sharding.batch_sharding(mesh)),
    out_shardings=(shardings, sharding.replicated(mesh)),
    static_argnums=(2, 3),
    donate_argnums=(0,),
  )
  state = _abstract(state, shardings)
  return step, (state, real, False, False), state


def gangealing_step(config, mesh):
  """(jitted step, abstract arguments, abstract state) of the GANgealing trainer on `mesh`."""
  import jax
  import jax.numpy as jnp

  from jaxgeal import sharding
  from jaxgeal.models import lpips, stylegan2
  from jaxgeal.trainers import gangealing as trainer

  gc = config.generator
  gcfg = dict(
    size=gc.size,
    style_dim=gc.style_dim,
    n_mlp=gc.n_mlp,
    channels=[tuple(c) for c in gc.channels]
    if gc.channels
    else [list(x) for x in stylegan2.default_channels(gc.channel_multiplier, gc.size)],
  )
  G = stylegan2.generator_from_config(gcfg)
  gen_vars = jax.eval_shape(lambda: G.init(jax.random.PRNGKey(0), jnp.zeros((1, gc.style_dim)), randomize_noise=False))
  kind = config.perceptual.kind
  if kind in ("vgg_ssl", "lpips"):
    module = lpips.LPIPS(lpips=(kind == "lpips"))
    x = jnp.zeros((1, 64, 64, 3))
    pvars = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x, x))
    perceptual = lpips.make_perceptual_loss(kind, pvars)
  else:
    perceptual = trainer.make_perceptual(config)
  models = trainer.build_models(config, G, gcfg)
  stn_tx, ll_tx, stn_sched, ll_sched = trainer.make_optimizers(config)
  state = jax.eval_shape(lambda: trainer.init_state_shapes(models, config, stn_tx, ll_tx))
  shard = lambda tree: sharding.state_shardings(mesh, tree, sharding.min_shard_size(config))
  step = sharding.jit_step(
    trainer.make_train_step(models, config, mesh, stn_tx, ll_tx, stn_sched, ll_sched),
    mesh,
    in_shardings=(shard(state), shard(gen_vars), shard(perceptual)),
    out_shardings=(shard(state), sharding.replicated(mesh)),
    donate_argnums=(0,),
  )
  args = tuple(_abstract(t, shard(t)) for t in (state, gen_vars, perceptual))
  return step, args, args[0]


def measure(model: str, n: int, fsdp: int) -> dict:
  import jax

  from jaxgeal import sharding

  config = _configs(model)
  config.num_devices = n
  config.mesh.fsdp = fsdp
  if "tiny" in model:
    config.mesh.min_shard_size = 0  # tiny tensors: shard them all, or nothing would be
  mesh = sharding.mesh_from_config(config)
  build = stylegan2_step if model.startswith("stylegan2") else gangealing_step
  t0 = time.perf_counter()
  step, args, state = build(config, mesh)
  compiled = step.lower(*args).compile()
  seconds = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  leaves = jax.tree_util.tree_leaves(state)
  return {
    "model": model,
    "devices": n,
    "mesh": {"data": n // fsdp, "fsdp": fsdp},
    "mode": "fsdp" if fsdp > 1 else "data_parallel",
    "state_bytes": sharding.shard_bytes(state),
    "state_bytes_total": sum(int(x.size) * x.dtype.itemsize for x in leaves),
    "argument_bytes": int(mem.argument_size_in_bytes),
    "output_bytes": int(mem.output_size_in_bytes),
    "alias_bytes": int(mem.alias_size_in_bytes),
    "temp_bytes": int(mem.temp_size_in_bytes),
    "compile_s": round(seconds, 1),
  }


def _mib(b):
  return f"{b / 2**20:,.1f}"


def write_markdown(path: pathlib.Path, report: dict):
  lines = [
    "# Per-device memory of the training steps: data parallel vs FSDP",
    "",
    f"`{report['command']}` on {report['machine']} ({report['backend']} backend, fake devices, jax "
    f"{report['jax']}); compiled, never run; {report['seconds']:.0f} s in all. MiB per device. "
    "state: the training state's share (parameters, EMA, Adam moments) from the shardings; argument / output / "
    "temp: XLA's memory_analysis() of the compiled step (outputs alias the donated state).",
    "",
    "| model | devices | mesh (data x fsdp) | state | state vs 1 device | arguments | outputs | temp |",
    "|---|---|---|---|---|---|---|---|",
  ]
  base = {r["model"]: r["state_bytes"] for r in report["results"] if r["devices"] == 1}
  for r in report["results"]:
    ratio = r["state_bytes"] / base[r["model"]] if r["model"] in base else float("nan")
    lines.append(
      f"| {r['model']} | {r['devices']} | {r['mesh']['data']} x {r['mesh']['fsdp']} | {_mib(r['state_bytes'])} | "
      f"{ratio:.3f} | {_mib(r['argument_bytes'])} | {_mib(r['output_bytes'])} | {_mib(r['temp_bytes'])} |"
    )
  path.write_text("\n".join(lines) + "\n")


def main():
  args = build_parser().parse_args()
  devices = [int(d) for d in args.devices.split(",")]
  # Fake CPU devices: the count must be set before JAX starts.
  os.environ["XLA_FLAGS"] = (
    f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={max(devices)}"
    " --xla_backend_optimization_level=0"
  ).strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax

  models = ["stylegan2_tiny", "gangealing_tiny"] if args.models == "tiny" else args.models.split(",")
  t0 = time.perf_counter()
  results = []
  for model in models:
    for n in devices:
      for fsdp in sorted({1, n}):
        results.append(measure(model, n, fsdp))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
  report = {
    "benchmark": "memory",
    "command": "python benchmarks/memory.py " + " ".join(sys.argv[1:]),
    "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores",
    "jax": jax.__version__,
    "backend": jax.default_backend(),
    "seconds": round(time.perf_counter() - t0, 1),
    "results": results,
  }
  if args.out:
    out = pathlib.Path(args.out)
    out.write_text(json.dumps(report, indent=1) + "\n")
    write_markdown(out.with_suffix(".md"), report)
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  main()
