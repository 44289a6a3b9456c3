"""Run `python -m jaxgeal.main` as a multi-process job on this machine (launch/local.py: N CPU processes with K
fake devices each, on a free loopback port) or as one process with K fake devices, for the multi-process tests.
Subprocesses share the test session's compilation cache (JAX_COMPILATION_CACHE_DIR, set by conftest)."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np

from jaxgeal import checkpoint

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "launch" / "local.py"
# Only guards against a hang: on a shared 2-core machine two processes compiling a tiny trainer's programs
# take 2-4 minutes.
HANG_TIMEOUT = 900


def env() -> dict:
  return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launcher_command(args, num_processes: int = 2, devices: int = 2, timeout: float = HANG_TIMEOUT) -> list[str]:
  return [
    sys.executable,
    str(LAUNCHER),
    f"--num_processes={num_processes}",
    f"--devices_per_process={devices}",
    f"--timeout={timeout}",
    "--",
    *args,
  ]


def run_job(args, num_processes: int = 2, devices: int = 2) -> subprocess.CompletedProcess:
  """The job, to its end (the launcher kills its processes past HANG_TIMEOUT; this waits a little longer)."""
  return subprocess.run(
    launcher_command(args, num_processes, devices),
    cwd=REPO,
    env=env(),
    capture_output=True,
    text=True,
    timeout=HANG_TIMEOUT + 60,
  )


def run_single(args, devices: int) -> subprocess.CompletedProcess:
  """One process with `devices` fake CPU devices."""
  cmd = [sys.executable, "-m", "jaxgeal.main", *args, f"--num_cpu_devices={devices}"]
  return subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=HANG_TIMEOUT)


def run_job_until(args, done, num_processes: int = 2, devices: int = 2, poll_s: float = 0.05) -> str:
  """Start the job, and as soon as `done()` is true SIGTERM the launcher, which kills every process by pid.
  Returns the job's output; AssertionError if the job ended by itself first."""
  proc = subprocess.Popen(
    launcher_command(args, num_processes, devices),
    cwd=REPO,
    env=env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  deadline = time.monotonic() + HANG_TIMEOUT
  try:
    while not done():
      if proc.poll() is not None:
        raise AssertionError(
          f"the job ended (status {proc.returncode}) before it was killed: {proc.stdout.read()[-3000:]}"
        )
      assert time.monotonic() < deadline, "the job did not get there in time"
      time.sleep(poll_s)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert proc.returncode == 143, (proc.returncode, out[-3000:])
  return out


def checkpoint_steps(workdir) -> list[int]:
  """The finished checkpoints' steps (Orbax renames a step's directory to its number once it is complete)."""
  path = pathlib.Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit()) if path.exists() else []


def exported(workdir) -> dict:
  """The exported model directory's variables, as {name: flat list of numpy arrays}."""
  import jax  # pylint: disable=import-outside-toplevel

  models = checkpoint.load_models(pathlib.Path(workdir) / "model")
  return {name: [np.asarray(x) for x in jax.tree_util.tree_leaves(v)] for name, (_, _, v) in models.items()}


def metrics(workdir) -> list[dict]:
  """metrics.jsonl without its wall-clock columns."""
  rows = [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  return [{k: v for k, v in r.items() if k not in ("time", "steps_per_s")} for r in rows]


def assert_same_run(a, b, rtol: float = 1e-5, atol: float = 1e-6):
  """Two work directories hold the same metrics (float tolerance) and the same exported variables."""
  ma, mb = metrics(a), metrics(b)
  assert [r["step"] for r in ma] == [r["step"] for r in mb]
  for ra, rb in zip(ma, mb):
    assert ra.keys() == rb.keys()
    np.testing.assert_allclose([ra[k] for k in ra], [rb[k] for k in ra], rtol=rtol, atol=atol, err_msg=str(ra["step"]))
  va, vb = exported(a), exported(b)
  assert va.keys() == vb.keys()
  for name in va:
    assert len(va[name]) == len(vb[name])
    for x, y in zip(va[name], vb[name]):
      np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=name)
