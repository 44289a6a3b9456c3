"""benchmarks/swapping.py: trains the tiny Swapping Autoencoder demo, scores swaps of held-out pairs against
their true hybrids and writes the report and its JSON twin (the numbers mean nothing at this size)."""

import json
import pathlib

import pytest

from benchmarks import swapping as bench

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_demo_is_trained_scored_and_reported(tmp_path):
  out = tmp_path / "swapping.md"
  config = f"{REPO / 'configs' / 'swapae_demo.py'}:tiny"
  assert bench.main(["--workdir", str(tmp_path / "w"), "--config", config, "--out", str(out)]) == 0
  result = json.loads(out.with_suffix(".json").read_text())
  assert result["num_pairs"] == 8 and result["training"]["steps"] == 2
  assert set(result["vs_truth"]) == {"swap", "copy_structure", "copy_texture", "rec_structure", "rec_texture"}
  assert all(0 <= w <= 1 for w in [*result["wins"].values(), *result["wins_object"].values()])
  assert set(result["structure_pck"]) == {*result["vs_truth"], "truth"}  # the detector's own ceiling too
  text = out.read_text()
  assert "Written by `benchmarks/swapping.py --workdir" in text
  assert "2 steps = 32 training images at 32 px" in text  # from the run's metrics: 2 x batch 8 per step
  assert "| copy_texture |" in text and "l1 (object)" in text and "Reconstruction of A" in text
  assert "PCK@0.1" in text and "On the truth itself it scores" in text
  assert (tmp_path / "w" / "swapae" / "model" / "model.json").exists()
