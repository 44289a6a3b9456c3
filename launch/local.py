"""Run one multi-process training job on this machine: N CPU processes with K fake devices each, talking over a
free loopback port (what the multi-process tests run; also a way to try a multi-host setup on a laptop).

  python launch/local.py --num_processes=2 --devices_per_process=2 [--timeout=600] -- \\
      --config=configs/cats.py:tiny --workdir=/tmp/cats-2x2

Every process runs `python -m jaxgeal.main <args after --> --coordinator_address=127.0.0.1:PORT
--num_processes=N --process_id=I --num_cpu_devices=K` with JAX_PLATFORMS=cpu. Process 0's output is this
command's output; the others print warnings and errors only, prefixed with their index. Exits with the first
failing process's status (the others are then killed, by pid, after a short grace period), 124 after --timeout
seconds (all killed), else 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

GRACE_S = 10  # after one process fails, how long the others get to fail or finish by themselves


def free_port() -> int:
  """A TCP port nobody listens on at the moment (the coordinator binds it a moment later)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def commands(args: list[str], num_processes: int, devices: int, port: int) -> list[list[str]]:
  return [
    [
      sys.executable,
      "-m",
      "jaxgeal.main",
      *args,
      f"--coordinator_address=127.0.0.1:{port}",
      f"--num_processes={num_processes}",
      f"--process_id={i}",
      f"--num_cpu_devices={devices}",
    ]
    for i in range(num_processes)
  ]


def kill(procs: list[subprocess.Popen]):
  for p in procs:
    if p.poll() is None:
      p.kill()
  for p in procs:
    p.wait()


def run(args: list[str], num_processes: int, devices: int, timeout: float | None, port: int | None = None) -> int:
  """Start the processes, wait for them; the job's exit status (see the module docstring)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen(cmd, env=env) for cmd in commands(args, num_processes, devices, port or free_port())]
  # SIGTERM (e.g. a test's timeout) takes the processes down with the launcher.
  signal.signal(signal.SIGTERM, lambda *_: (kill(procs), sys.exit(143)))
  deadline = None if timeout is None else time.monotonic() + timeout
  failed_at = None
  try:
    while any(p.poll() is None for p in procs):
      now = time.monotonic()
      if deadline is not None and now > deadline:
        print(f"error: the job did not finish within {timeout:g} s; killed it", file=sys.stderr)
        kill(procs)
        return 124
      if failed_at is None and any(p.returncode for p in procs if p.poll() is not None):
        failed_at = now
      if failed_at is not None and now > failed_at + GRACE_S:
        kill(procs)
      time.sleep(0.1)
  finally:
    kill(procs)
  codes = [p.returncode for p in procs]
  return next((c for c in codes if c), 0)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  ours, rest = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--num_processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=1)
  parser.add_argument("--timeout", type=float, default=None, help="seconds before the whole job is killed")
  parser.add_argument("--port", type=int, default=None, help="coordinator port (default: a free one)")
  a = parser.parse_args(ours)
  if a.num_processes < 1 or a.devices_per_process < 1:
    parser.error("--num_processes and --devices_per_process must be positive")
  return run(rest, a.num_processes, a.devices_per_process, a.timeout, a.port)


if __name__ == "__main__":
  sys.exit(main())
