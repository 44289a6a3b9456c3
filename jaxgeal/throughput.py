"""Speed accounting for the benchmarks (benchmarks/*.py): median wall times, the FLOPs XLA counts for a compiled
computation, the machine's fp32 matmul peak measured in the same process, and achieved FLOP/s as a fraction of it.

The peak is the best of numpy's BLAS and XLA's own dot on an n x n float32 matmul (2 n^3 FLOPs): on the AVX-512
machines here numpy's BLAS is faster than XLA:CPU's dot, and what a step could reach is the best either gets.
Every workload row has the same fields (`row`), so tables from different benchmarks read alike.
"""

from __future__ import annotations

import os
import pathlib
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def timed(fn: Callable[..., Any], *args, repeats: int = 3) -> tuple[float, float]:
  """(median seconds per call over `repeats` calls after one warm-up call, seconds of the first call: compile +
  run). `fn(*args)`'s outputs are waited for."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - t0
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(max(1, repeats)):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times), first


def timed_alternately(fns: Sequence[Callable[..., Any]], args: tuple, repeats: int = 3) -> list[tuple[float, float]]:
  """`timed` for several functions of the same `args`, their timed calls interleaved (fn 0, fn 1, ..., fn 0, ...)
  so that a change in the machine's load falls on all of them alike: one (median, first call) pair per function."""
  firsts = []
  for fn in fns:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    firsts.append(time.perf_counter() - t0)
  for fn in fns:
    jax.block_until_ready(fn(*args))
  times = [[] for _ in fns]
  for _ in range(max(1, repeats)):
    for fn, ts in zip(fns, times):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*args))
      ts.append(time.perf_counter() - t0)
  return [(statistics.median(ts), first) for ts, first in zip(times, firsts)]


def compiled_flops(jitted, *args, **kwargs) -> float:
  """FLOPs of one call as XLA's cost analysis of the compiled computation counts them (0 where it gives none).
  Lowering and compiling again hits the compilation cache of `jitted` only if the call was made already."""
  cost = jitted.lower(*args, **kwargs).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", 0.0))


def matmul_peak(n: int = 4096, repeats: int = 5) -> dict[str, float]:
  """fp32 n x n matmul GFLOP/s of numpy and of jax (best of `repeats` each) and the best of both."""
  rng = np.random.default_rng(0)
  a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
  flops = 2.0 * n**3

  def best(fn, *args):
    fn(*args)  # warm-up (and compile)
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times.append(time.perf_counter() - t0)
    return flops / min(times) / 1e9

  numpy_peak = best(np.matmul, a, b)
  jax_peak = best(jax.jit(jnp.matmul), jnp.asarray(a), jnp.asarray(b))
  return {"numpy": numpy_peak, "jax": jax_peak, "best": max(numpy_peak, jax_peak), "n": n}


def row(name: str, seconds: float, images: int, flops: float, peak: float, compile_s: float, **extra) -> dict:
  """One workload's record: seconds per call, images/s, XLA's GFLOPs per call, achieved GFLOP/s, the peak and
  the fraction of it, compile seconds (first call minus a timed one), plus `extra` fields."""
  gflops = flops / 1e9
  return {
    "workload": name,
    **extra,
    "seconds": seconds,
    "images_per_s": images / seconds,
    "gflops": gflops,
    "gflops_per_s": gflops / seconds,
    "peak_gflops_per_s": peak,
    "fraction_of_peak": gflops / seconds / peak if peak else float("nan"),
    "compile_s": compile_s,
  }


def cpu_model() -> str:
  """The CPU's model name and its widest vector unit (these machines differ: AVX2 or AVX-512)."""
  name, flags = platform.processor() or platform.machine(), set()
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        name = line.split(":", 1)[1].strip()
      elif line.startswith("flags"):
        flags = set(line.split(":", 1)[1].split())
  except OSError:
    pass
  vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
  return f"{name} ({vector})" if vector else name


def machine() -> dict:
  """Where the numbers come from: CPU, cores, JAX version and backend, the 1-minute load (other jobs) and the
  XLA_FLAGS the process ran with (XLA:CPU's options change the times, see benchmarks/README.md)."""
  return {
    "cpu": cpu_model(),
    "cpu_count": os.cpu_count(),
    "jax": jax.__version__,
    "backend": jax.default_backend(),
    "device": str(jax.devices()[0]),
    "load_average_1min": os.getloadavg()[0],
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


def markdown(rows: list[dict], title: str, info: dict) -> str:
  """The rows as a markdown table, with the machine they were measured on."""
  lines = [
    f"### {title}",
    "",
    f"Measured on {info['cpu']}, {info['cpu_count']} cores, jax {info['jax']} ({info['backend']}); load average "
    f"{info['load_average_1min']:.1f} at the start. Peak: best fp32 matmul (numpy / jax) in the same run."
    + (f" XLA_FLAGS: `{info['xla_flags']}`." if info.get("xla_flags") else ""),
    "",
    "| workload | s | images/s | GFLOP | GFLOP/s | fraction of peak | compile s |",
    "|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    lines.append(
      f"| {r['workload']} | {r['seconds']:.3f} | {r['images_per_s']:.2f} | {r['gflops']:.1f} | "
      f"{r['gflops_per_s']:.1f} | {r['fraction_of_peak']:.2f} | {r['compile_s']:.1f} |"
    )
  return "\n".join(lines) + "\n"
