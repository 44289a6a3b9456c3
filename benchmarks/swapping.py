"""Swapping quality on the synthetic heads against exact ground truth (jaxgeal/evaluation/swapping.py).

Trains the Swapping Autoencoder demo (configs/swapae_demo.py: renders -> jaxgeal.trainers.swapae; resumable
stages in the work directory) unless --model names a trained model, then scores swap(structure A, texture B) of
held-out pairs against the true hybrid (A's pose and shape rendered in B's appearance), beside copy A, copy B and
the reconstructions of A and of B, and the reconstruction of A. Writes JSON (--json) and a markdown report
(--out, default benchmarks/swapping.md) with the command, machine and times.

  .venv/bin/python benchmarks/swapping.py --workdir /tmp/swapae-demo          # trains the demo first
  .venv/bin/python benchmarks/swapping.py --workdir /tmp/s --config configs/swapae_demo.py:tiny --out /tmp/s.md
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shlex
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
  )
  p.add_argument("--workdir", required=True, help="the demo's work directory (its stages resume)")
  p.add_argument("--config", default=str(REPO / "configs" / "swapae_demo.py"), help="a swapae_demo config[:variant]")
  p.add_argument("--model", default=None, help="a trained model directory instead of <workdir>/swapae/model")
  p.add_argument("--num_pairs", type=int, default=None, help="held-out pairs (default: the config's)")
  p.add_argument("--out", default=str(REPO / "benchmarks" / "swapping.md"))
  p.add_argument("--json", default=None, help="JSON output (default: --out with .json)")
  return p


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)

  import jax

  from jaxgeal.datasets import synthetic
  from jaxgeal.evaluation import swapping
  from jaxgeal.swap import SwappingAutoencoder
  from jaxgeal.trainers import config_variants, demo, swapae_demo

  config = config_variants.load_config(args.config)
  workdir = pathlib.Path(args.workdir)
  seconds = {}
  model = args.model
  if model is None:
    t = time.perf_counter()
    source = demo.prepare_data(config, workdir)
    model = swapae_demo.train(config, workdir, source)
    seconds["data_and_training (this call)"] = time.perf_counter() - t
  d = config.data
  t = time.perf_counter()
  pairs = swapping.render_pairs(
    args.num_pairs or d.num_pairs, d.size, d.heldout_seed, synthetic.RenderOptions(**d.render)
  )
  result = swapping.evaluate(SwappingAutoencoder.load(model), pairs, swapae_demo.detector(config).detect)
  seconds["evaluation"] = time.perf_counter() - t
  from jaxgeal import throughput

  cpu = f"{throughput.cpu_model()} ({platform.machine()}, {os.cpu_count()} cores)"
  machine = f"{cpu}, jax {jax.__version__} ({jax.default_backend()})"
  result.update(
    command=" ".join(shlex.quote(a) for a in ["benchmarks/swapping.py", *(argv if argv is not None else sys.argv[1:])]),
    config=args.config,
    model=str(model),
    machine=machine,
    seconds=seconds,
  )
  metrics = workdir / "swapae" / "metrics.jsonl"
  if args.model is None and metrics.exists():
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    result["training"] = {"steps": rows[-1]["step"], "final": {k: v for k, v in rows[-1].items() if k != "time"}}
  out = pathlib.Path(args.out)
  json_path = pathlib.Path(args.json) if args.json else out.with_suffix(".json")
  json_path.write_text(json.dumps(result, indent=1))
  # What the model saw: its own run's last logged step where known (a run resumed with a larger total_images
  # trains past the config's), else the config's total.
  if "training" in result:
    steps = result["training"]["steps"]
    trained = f"{steps:,} steps = {steps * 2 * config.swapae.batch_size:,} training images"
  else:
    trained = f"{config.swapae.total_images:,} training images (the config's)"
  header = [
    "# Swapping Autoencoder: swaps against exact ground truth",
    "",
    f"Written by `{result['command']}` on {machine}. Config `{pathlib.Path(args.config).name}`; model "
    f"`{model}`; {trained} at {d.size} px. JSON: `{json_path.name}`.",
    "",
  ]
  out.write_text("\n".join(header) + swapping.markdown(result))
  print(json.dumps({k: result[k] for k in ("vs_truth", "wins", "reconstruction")}, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
