"""benchmarks/versus_original.py's bookkeeping (the runs need the original and a PyTorch, which CI lacks): each
side's best round counts, both sides' GFLOP/s use XLA's FLOP count against the best peak of any library, and
only workloads both measured are compared."""

import importlib.util
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("versus_original", REPO / "benchmarks" / "versus_original.py")
versus = importlib.util.module_from_spec(spec)
spec.loader.exec_module(versus)


def report(peaks, seconds, gflops=None):
  rows = [
    {"workload": name, "batch": batch, "seconds": s, **({"gflops": gflops[name]} if gflops else {})}
    for (name, batch), s in seconds.items()
  ]
  return {"matmul_peak_gflops_per_s": dict(peaks, best=max(peaks.values())), "results": rows}


def test_best_rounds_ratios_and_fractions_of_the_best_peak():
  step, congeal = ("train step, batch 5", 5), ("congeal 256->128, batch 8, iters 1", 8)
  gflops = {step[0]: 2000.0, congeal[0]: 240.0}
  ours = [
    report({"numpy": 250.0, "jax": 400.0, "n": 4096}, {step: 10.0, congeal: 2.0}, gflops),
    report({"numpy": 260.0, "jax": 390.0, "n": 4096}, {step: 8.0, congeal: 2.5}, gflops),
  ]
  original = [
    report({"torch": 500.0, "numpy": 250.0}, {step: 20.0, congeal: 4.0, (("G forward, batch 1"), 1): 1.0}),
    report({"torch": 300.0, "numpy": 250.0}, {step: 25.0, congeal: 3.2}),
  ]
  # jaxgeal's congealing also under XLA's default compiler options: compared with the same original row.
  defaults = (congeal[0] + versus.XLA_DEFAULTS, 8)
  for r, s in zip(ours, (2.4, 2.6)):
    r["results"].append({"workload": defaults[0], "batch": 8, "seconds": s, "gflops": 240.0})
  result = versus.compare(ours, original)
  assert result["peak_gflops_per_s"] == 500.0  # torch's, the best any library reached
  first, second, third = result["rows"]
  assert first["workload"] == step[0] and second["workload"] == congeal[0] and third["workload"] == defaults[0]
  assert (first["jaxgeal_s"], first["original_s"]) == (8.0, 20.0)
  assert first["time_ratio"] == pytest.approx(0.4) and first["speedup"] == pytest.approx(2.5)
  assert first["jaxgeal_images_per_s"] == pytest.approx(5 / 8.0)
  assert first["jaxgeal_fraction_of_peak"] == pytest.approx(2000.0 / 8.0 / 500.0)
  assert first["original_fraction_of_peak"] == pytest.approx(2000.0 / 20.0 / 500.0)
  assert (second["jaxgeal_s"], second["original_s"]) == (2.0, 3.2)
  assert (third["jaxgeal_s"], third["original_s"]) == (2.4, 3.2)
  info = dict(cpu="CPU (AVX2)", cpu_count=2, jax="0.10.2", torch="2.13.0", rounds=2, date="2026-12-07")
  table = versus.markdown(result, dict(info, upstream_commit="ffa6387c7ffd"))
  assert "on CPU (AVX2), 2 cores: jax 0.10.2, torch 2.13.0, the original at commit ffa6387; 2 alternating" in table
  assert "| train step, batch 5 | 20.000 | 8.000 | 0.40x | 0.25 · 0.62 | 0.20 · 0.50 |" in table
  assert "G forward" not in table  # measured by one side only
  assert "XLA_FLAGS" not in table
  flagged = versus.markdown(result, dict(info, upstream_commit=None, xla_flags="--xla_cpu_use_onednn=true"))
  assert "jaxgeal's XLA_FLAGS: `--xla_cpu_use_onednn=true`." in flagged


def test_the_last_json_object_is_read_past_other_output():
  out = 'Fitting PCA...\n{"row": 1}\n{\n "benchmark": "x",\n "results": []\n}\n'
  assert versus.last_json(out) == {"benchmark": "x", "results": []}
  with pytest.raises(ValueError, match="no JSON object"):
    versus.last_json("Traceback ...\n")


def test_a_round_merges_both_jaxgeal_reports_and_names_generator_rows_as_the_original_does():
  step = report({"numpy": 250.0, "jax": 300.0}, {("train step, batch 1", 1): 2.0})
  generator = report({"numpy": 260.0, "jax": 280.0, "n": 4096}, {})
  generator["results"] = [{"workload": "G fwd, 256 px, batch 4, input_scaling", "impl": "input_scaling", "batch": 4}]
  merged = versus.merge([step, generator])
  assert merged["matmul_peak_gflops_per_s"] == {"numpy": 260.0, "jax": 300.0, "best": 300.0}
  assert [r["workload"] for r in merged["results"]] == ["train step, batch 1", "G fwd, 256 px, batch 4"]


def test_the_generator_rows_use_jaxgeals_default_modulated_conv():
  from jaxgeal.ops import modulated_conv

  assert versus.DEFAULT_IMPL == modulated_conv.DEFAULT_IMPL
