"""How far float32 GANgealing losses and gradients lie from float64: upstream's recordings and ours.

Recomputes every loss call of the `losses_gangealing` parity fixtures ($JAXGEAL_FIXTURES, see tests/fixtures.py)
through the trainer's own loss function, as tests/losses/gangealing_losses_test.py does, once in float32 (the
test's computation) and once with every float input cast to float64. Per recorded output (loss terms and the
gradients `d total / d <param>`) it reports the max abs error, relative to the output's largest float64 value,
of upstream's float32 recording and of our float32 value, against our float64 value. This is what the parity
test's tolerances rest on: two float32 computations cannot be held closer to each other than each lies from the
exact value. Prints one JSON object; `--out FILE.md` also writes a markdown report.

  JAXGEAL_FIXTURES=/work/shared/fixtures JAX_DISABLE_MOST_OPTIMIZATIONS=1 \
      XLA_FLAGS=--xla_cpu_use_fusion_emitters=false \
      python benchmarks/loss_gradients_float64.py --out benchmarks/loss_gradients_float64.md

(The parity tests compile so, tests/conftest.py: the settings above give their float32 rounding.)
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the fixture loader of tests/

from jaxgeal import throughput  # noqa: E402
from tests import fixtures  # noqa: E402
from tests.losses.gangealing_losses_test import recorded_loss_calls  # noqa: E402


def relative_error(value, reference) -> float:
  value, reference = np.asarray(value, np.float64), np.asarray(reference, np.float64)
  scale = float(np.max(np.abs(reference))) or 1.0
  return float(np.max(np.abs(value - reference))) / scale


def measure(fx, fixture_id: str) -> list[dict]:
  rows = []
  calls32 = list(recorded_loss_calls(fx, np.float32))
  calls64 = list(recorded_loss_calls(fx, np.float64))
  for (_, cluster, ours32), (_, _, ours64) in zip(calls32, calls64, strict=True):
    for name, exact in ours64.items():
      recorded = fx[name]
      if recorded.ndim == 4 and recorded.shape[1] == 3:
        recorded = fixtures.nchw_to_nhwc(recorded)
      rows.append(
        {
          "fixture": fixture_id,
          "output": name,
          "loss": "clustering" if cluster else "congealing",
          "upstream_vs_float64": relative_error(recorded, exact),
          "ours_vs_float64": relative_error(ours32[name], exact),
          "ours_vs_upstream": relative_error(ours32[name], recorded),
        }
      )
  return rows


def machine() -> str:
  return f"{throughput.cpu_model()} ({platform.machine()}, {os.cpu_count()} cores), jax {jax.__version__}"


def markdown(rows: list[dict], command: str) -> str:
  lines = [
    "# GANgealing losses and gradients: float32 against float64",
    "",
    f"Written by `{command}` (do not edit by hand). Machine: {machine()}; XLA_FLAGS="
    f"`{os.environ.get('XLA_FLAGS', '')}`, jax_disable_most_optimizations="
    f"{jax.config.read('jax_disable_most_optimizations')}.",
    "",
    "Each output of each recorded loss call of the `losses_gangealing` fixtures, recomputed by our loss in float64.",
    "Errors are max abs, relative to the output's largest float64 value: `upstream` is upstream's float32 recording,",
    "`ours` our float32 value (the parity test's computation, on this machine). The test holds ours to upstream,",
    "so its bound must cover both columns.",
    "",
    "| fixture | output | loss | upstream vs f64 | ours vs f64 | ours vs upstream |",
    "| --- | --- | --- | --- | --- | --- |",
  ]
  for r in rows:
    lines.append(
      f"| {r['fixture']} | {r['output']} | {r['loss']} | {r['upstream_vs_float64']:.1e} | "
      f"{r['ours_vs_float64']:.1e} | {r['ours_vs_upstream']:.1e} |"
    )
  return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
  )
  p.add_argument("--out", default=None, help="also write a markdown report here")
  return p


def check_out(out: str | None, fixture_root: pathlib.Path) -> str | None:
  """One line for an --out this run cannot write, before minutes of work: a missing folder, or a path among
  the fixtures it reads."""
  if out is None:
    return None
  path = pathlib.Path(out).resolve()
  if not path.parent.is_dir():
    return f"--out {out}: folder {path.parent} does not exist"
  if path.is_relative_to(fixture_root.resolve()):
    return f"--out {out}: inside the fixture directory {fixture_root} this benchmark reads"
  return None


def main(argv=None):
  args = build_parser().parse_args(argv)
  if error := check_out(args.out, fixtures.fixture_root()):
    raise SystemExit(error)
  jax.config.update("jax_enable_x64", True)  # Here, not at import: the module's functions are tested in-process.
  rows = []
  for param in fixtures.collect("losses_gangealing"):
    (fx,) = param.values
    if fx is None:
      raise SystemExit(f"no losses_gangealing fixtures under {fixtures.fixture_root()} ($JAXGEAL_FIXTURES)")
    rows += measure(fx, param.id)
  print(json.dumps({"machine": machine(), "xla_flags": os.environ.get("XLA_FLAGS", ""), "results": rows}, indent=1))
  if args.out:
    command = "python benchmarks/loss_gradients_float64.py " + " ".join(argv if argv is not None else sys.argv[1:])
    pathlib.Path(args.out).write_text(markdown(rows, command.strip()))


if __name__ == "__main__":
  main()
