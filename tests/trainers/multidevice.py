"""Run a trainer script under N fake CPU devices. The device count must be set before JAX starts, so the
script runs in a fresh interpreter (sharing the test session's compilation cache) and prints JSON last."""

import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
PRELUDE = """
import json, os, sys
import jax
"""


def run_with_fake_devices(script: str, workdir, num_devices: int = 8, timeout: int = 1200):
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={num_devices}".strip()
  env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")  # the cache: JAX_COMPILATION_CACHE_DIR (conftest)
  res = subprocess.run(
    [sys.executable, "-c", PRELUDE + script, str(workdir)],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  assert res.returncode == 0, res.stderr[-3000:]
  return json.loads(res.stdout.strip().splitlines()[-1])


def shard_shapes(tree) -> dict[str, list]:
  """{path: [global shape, one device's shard shape]} of a pytree of arrays; called in the device process."""
  import jax

  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(p): [list(x.shape), list(x.addressable_shards[0].data.shape)] for p, x in leaves}


def assert_fsdp_split(shards: dict, fsdp: int) -> int:
  """Each tensor of `shard_shapes` is split over `fsdp` devices on the axis `sharding.fsdp_spec` picks (with
  min_shard_size 0), or held whole where it picks none. Returns how many were split."""
  from jaxgeal import sharding

  split = 0
  for path, (shape, shard) in shards.items():
    spec = sharding.fsdp_spec(shape, fsdp, 0)
    assert shard == [d // fsdp if i == len(spec) - 1 and spec else d for i, d in enumerate(shape)], path
    split += bool(spec)
  return split


def assert_moments_split_as_parameters(shards: dict, net: str, moments: str):
  """Adam's mu and nu of the parameters at ['net'] are split as the parameters. `moments` is their path with {}
  for the moment's name, e.g. "['g_opt'][0].{}['E']"."""
  params = [p for p in shards if p.startswith(f"['{net}']")]
  assert params, net
  for path in params:
    for moment in ("mu", "nu"):
      assert shards[path.replace(f"['{net}']", moments.format(moment), 1)][1] == shards[path][1], path
