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
