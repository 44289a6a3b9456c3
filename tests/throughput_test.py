"""jaxgeal.throughput: the numbers the speed benchmarks report are computed as they say."""

import time

import jax
import jax.numpy as jnp

from jaxgeal import throughput


def test_compiled_flops_counts_a_matmul_as_2_n_cubed():
  n = 64
  f = jax.jit(jnp.matmul)
  a = jnp.ones((n, n), jnp.float32)
  f(a, a)
  assert throughput.compiled_flops(f, a, a) == 2 * n**3


def test_row_divides_work_by_time_and_by_the_peak():
  r = throughput.row("step", seconds=0.5, images=4, flops=2e9, peak=8.0, compile_s=3.0, batch=4)
  assert r["images_per_s"] == 8.0 and r["gflops_per_s"] == 4.0 and r["fraction_of_peak"] == 0.5
  assert r["batch"] == 4 and r["workload"] == "step" and r["compile_s"] == 3.0


def test_timed_waits_for_results_and_separates_the_first_call():
  calls = []

  def fn(x):
    calls.append(x)
    return jnp.asarray(x) + 1

  median, first = throughput.timed(fn, 1.0, repeats=3)
  assert len(calls) == 5 and median >= 0 and first >= 0  # first call, warm-up, 3 timed


def test_timed_alternately_interleaves_the_timed_calls():
  calls = []

  def make(name, seconds):
    def fn(x):
      calls.append(name)
      time.sleep(seconds)
      return jnp.asarray(x)

    return fn

  (slow, _), (fast, _) = throughput.timed_alternately([make("a", 0.02), make("b", 0.0)], (1.0,), repeats=3)
  # First calls, warm-ups, then a, b three times over: a change of load falls on both alike.
  assert calls == ["a", "b", "a", "b"] + ["a", "b"] * 3
  assert slow >= 0.02 > fast


def test_matmul_peak_reports_both_libraries_and_the_best():
  peak = throughput.matmul_peak(n=128, repeats=2)
  assert peak["best"] == max(peak["numpy"], peak["jax"]) > 0


def test_markdown_names_the_machine_and_every_workload():
  info = throughput.machine()
  rows = [throughput.row(w, 1.0, 1, 1e9, 10.0, 0.0) for w in ("train b1", "congeal i3")]
  text = throughput.markdown(rows, "GANgealing", info)
  assert info["cpu"] in text and "train b1" in text and "congeal i3" in text and "0.10" in text


def test_markdown_names_the_xla_flags_a_run_used(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=dot")
  info = throughput.machine()
  assert info["xla_flags"] == "--xla_cpu_experimental_ynn_fusion_type=dot"
  assert "XLA_FLAGS: `--xla_cpu_experimental_ynn_fusion_type=dot`" in throughput.markdown([], "GANgealing", info)
  monkeypatch.delenv("XLA_FLAGS")
  assert "XLA_FLAGS" not in throughput.markdown([], "GANgealing", throughput.machine())
