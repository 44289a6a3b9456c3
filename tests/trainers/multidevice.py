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
jax.config.update("jax_compilation_cache_dir", os.environ["JAXGEAL_TEST_JIT_CACHE"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
"""


def run_with_fake_devices(script: str, workdir, num_devices: int = 8, timeout: int = 1200):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}", JAX_PLATFORMS="cpu")
  res = subprocess.run([sys.executable, "-c", PRELUDE + script, str(workdir)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=timeout)
  assert res.returncode == 0, res.stderr[-3000:]
  return json.loads(res.stdout.strip().splitlines()[-1])
