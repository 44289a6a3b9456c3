"""benchmarks/memory.py on the tiny StyleGAN2 config and 2 fake devices: under FSDP each device holds about
half of the training state and of the step's arguments, and the JSON and markdown reports are written."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_fsdp_halves_the_state_on_two_devices(tmp_path):
  out = tmp_path / "memory.json"
  cmd = [sys.executable, "benchmarks/memory.py", "--models", "stylegan2_tiny", "--devices", "2", "--out", str(out)]
  res = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True)
  assert res.returncode == 0, res.stderr[-3000:]
  report = json.loads(out.read_text())
  dp, fsdp = report["results"]
  assert (dp["mesh"], fsdp["mesh"]) == ({"data": 2, "fsdp": 1}, {"data": 1, "fsdp": 2})
  assert dp["state_bytes"] == dp["state_bytes_total"] == fsdp["state_bytes_total"]
  assert 0.5 <= fsdp["state_bytes"] / dp["state_bytes"] < 0.55  # biases and scalars stay replicated
  assert fsdp["argument_bytes"] < 0.6 * dp["argument_bytes"]
  assert "| stylegan2_tiny | 2 | 1 x 2 |" in out.with_suffix(".md").read_text()
