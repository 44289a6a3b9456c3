"""jaxgeal against the original PyTorch GANgealing on this machine: `gangealing_step.py` (paper config, LPIPS)
with `stylegan2.py` (the 256 px generator's forward) and `original_gangealing.py` run alternately, `--rounds`
times each, and one table of both with their ratios (issue 25's goal: a training step in at most 0.4x the
original's seconds, congealing at 3x its images/s).

  .venv/bin/python benchmarks/versus_original.py --upstream /tmp/gangealing \
      --torch_python /tmp/torch-cpu/bin/python --markdown benchmarks/versus_original.md

(`original_gangealing.py`'s docstring says how to make the clone and the PyTorch environment.) Each side's
seconds are the best over rounds of its median-of-repeats, so a round disturbed by another job counts least.
Both sides do the same arithmetic, so achieved GFLOP/s uses the FLOPs XLA counts for jaxgeal's computation for
both, against the best fp32 matmul peak any of numpy, jax and torch reached in the run. The JSON (`--out`)
holds every round's raw output.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_IMPL = "input_scaling"  # jaxgeal.ops.modulated_conv.DEFAULT_IMPL; not imported: that would start JAX here


XLA_DEFAULTS = " (XLA defaults)"  # gangealing_step.py's suffix for congealing under XLA's default options


def last_json(stdout: str) -> dict:
  """The final JSON object a benchmark printed (both print it last, indented, from a line holding '{')."""
  lines = stdout.splitlines()
  for i in range(len(lines) - 1, -1, -1):
    if lines[i] == "{":
      return json.loads("\n".join(lines[i:]))
  raise ValueError(f"no JSON object in the output: {stdout[-500:]!r}")


def run(cmd: list[str]) -> dict:
  res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  if res.returncode != 0:
    sys.exit(f"error: {' '.join(cmd[:2])} failed (exit {res.returncode}): {res.stderr.strip().splitlines()[-1:]}")
  return last_json(res.stdout)


def merge(reports: list[dict]) -> dict:
  """One round's reports as one: all rows (a generator row's modulated-conv implementation dropped from its
  name, as the original has one), every library's best matmul peak."""
  peaks, rows = {}, []
  for report in reports:
    for k, v in report["matmul_peak_gflops_per_s"].items():
      if k not in ("best", "n"):
        peaks[k] = max(peaks.get(k, 0.0), v)
    for r in report["results"]:
      rows.append(dict(r, workload=r["workload"].removesuffix(f", {r['impl']}")) if "impl" in r else r)
  return dict(reports[0], matmul_peak_gflops_per_s=dict(peaks, best=max(peaks.values())), results=rows)


def best_seconds(reports: list[dict]) -> dict[str, float]:
  """{workload: the smallest of its seconds over the reports}."""
  out = {}
  for report in reports:
    for r in report["results"]:
      out[r["workload"]] = min(out.get(r["workload"], float("inf")), r["seconds"])
  return out


def compare(ours: list[dict], original: list[dict]) -> dict:
  """Rows for every workload both sides measured: seconds, images/s and GFLOP/s of each, and the ratios. A
  jaxgeal row under XLA's default compiler options (`gangealing_step.py --compare_xla_defaults`) is compared with
  the original's row of the same work."""
  mine, theirs = best_seconds(ours), best_seconds(original)
  peaks = [v for r in ours + original for k, v in r["matmul_peak_gflops_per_s"].items() if k not in ("best", "n")]
  peak = max(peaks)
  first = {r["workload"]: r for r in ours[0]["results"]}
  rows = []
  for name, row in first.items():
    work = name.removesuffix(XLA_DEFAULTS)
    if work not in theirs:
      continue
    images = row["batch"]
    a, b = mine[name], theirs[work]
    rows.append(
      {
        "workload": name,
        "original_s": b,
        "jaxgeal_s": a,
        "original_images_per_s": images / b,
        "jaxgeal_images_per_s": images / a,
        "time_ratio": a / b,  # < 1: jaxgeal is faster
        "speedup": b / a,
        "gflops": row["gflops"],
        "original_fraction_of_peak": row["gflops"] / b / peak,
        "jaxgeal_fraction_of_peak": row["gflops"] / a / peak,
      }
    )
  return {"peak_gflops_per_s": peak, "rows": rows}


def markdown(result: dict, info: dict) -> str:
  lines = [
    "### jaxgeal against the original PyTorch GANgealing",
    "",
    f"Measured on {info['date']} on {info['cpu']}, {info['cpu_count']} cores: jax {info['jax']}, torch "
    f"{info['torch']}, the original at commit {(info['upstream_commit'] or 'unknown (not a git clone)')[:7]}; "
    f"{info['rounds']} alternating rounds (best of each side). Paper config, LPIPS, random weights. Peak: best "
    f"fp32 4096² matmul of numpy, jax and torch in the run, {result['peak_gflops_per_s']:.0f} GFLOP/s."
    + (f" jaxgeal's XLA_FLAGS: `{info['xla_flags']}`." if info.get("xla_flags") else ""),
    "",
    "| workload | original s | jaxgeal s | jaxgeal / original time | images/s: original · jaxgeal | fraction of peak: "
    "original · jaxgeal |",
    "|---|---|---|---|---|---|",
  ]
  for r in result["rows"]:
    lines.append(
      f"| {r['workload']} | {r['original_s']:.3f} | {r['jaxgeal_s']:.3f} | {r['time_ratio']:.2f}x | "
      f"{r['original_images_per_s']:.2f} · {r['jaxgeal_images_per_s']:.2f} | "
      f"{r['original_fraction_of_peak']:.2f} · {r['jaxgeal_fraction_of_peak']:.2f} |"
    )
  return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
  p.add_argument("--upstream", required=True, help="a clone of wpeebles/gangealing")
  p.add_argument("--torch_python", required=True, help="the Python of an environment with a CPU PyTorch")
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--batch_sizes", default="1,5")
  p.add_argument("--iters", default="1,3")
  p.add_argument("--g_batch_sizes", default="1,4", help="StyleGAN2 256 px generator forward ('' for none)")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--out", default=None, help="write the JSON here (default: print it)")
  p.add_argument("--markdown", default=None, help="also write the table to this markdown file")
  return p


def main(argv=None):
  args = build_parser().parse_args(argv)
  if shutil.which(args.torch_python) is None:
    sys.exit(f"error: --torch_python {args.torch_python}: no such program (the Python of a PyTorch environment)")
  shared = ["--batch_sizes", args.batch_sizes, "--iters", args.iters, "--repeats", str(args.repeats), "--json"]
  ours_cmd = [sys.executable, "benchmarks/gangealing_step.py", "--configs", "paper", "--perceptual", "lpips", *shared]
  ours_cmd += ["--compare_xla_defaults"]  # congealing as Aligner compiles it and under XLA's defaults
  generator_cmd = [sys.executable, "benchmarks/stylegan2.py", "--sizes", "256", "--batch_sizes", args.g_batch_sizes]
  generator_cmd += ["--modes", "fwd", "--impls", DEFAULT_IMPL, "--repeats", str(args.repeats)]
  original_cmd = [args.torch_python, "benchmarks/original_gangealing.py", "--upstream", args.upstream, *shared]
  original_cmd += ["--g_batch_sizes", args.g_batch_sizes]
  ours, original = [], []
  for i in range(args.rounds):
    print(f"round {i + 1}/{args.rounds}: jaxgeal", file=sys.stderr, flush=True)
    ours.append(merge([run(ours_cmd)] + ([run(generator_cmd)] if args.g_batch_sizes else [])))
    print(f"round {i + 1}/{args.rounds}: original", file=sys.stderr, flush=True)
    original.append(run(original_cmd))
  result = compare(ours, original)
  info = {
    "cpu": ours[0]["cpu"],
    "cpu_count": ours[0]["cpu_count"],
    "jax": ours[0]["jax"],
    "xla_flags": ours[0].get("xla_flags", ""),
    "torch": original[0]["torch"],
    "upstream_commit": original[0].get("upstream_commit"),
    "date": time.strftime("%Y-%m-%d"),
    "rounds": args.rounds,
  }
  report = {"benchmark": "versus_original", **info, **result, "jaxgeal_runs": ours, "original_runs": original}
  text = json.dumps(report, indent=1)
  if args.out:
    pathlib.Path(args.out).write_text(text + "\n")
  else:
    print(text)
  if args.markdown:
    pathlib.Path(args.markdown).write_text(markdown(result, info))
  return report


if __name__ == "__main__":
  main()
