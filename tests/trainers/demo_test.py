"""The embedded demo (configs/demo.py, jaxgeal/trainers/demo.py): the `:tiny` variant runs every stage and
writes average.png, grid.png, pck.json (valid fractions, baseline, perceptual loss) and report.md; re-running
skips the finished stages. No PCK level is asserted: two training steps align nothing."""
import importlib.util
import json
import pathlib

import numpy as np
import pytest

from jaxgeal import images, main

REPO = pathlib.Path(__file__).resolve().parents[2]


def _config(arg):
  spec = importlib.util.spec_from_file_location("demo_config", REPO / "configs" / "demo.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_config_names_the_demo_trainer():
  c = _config(None)
  assert c.trainer == "demo" and "demo" in main.TRAINERS
  assert c.gangealing.perceptual.kind == "mse" and c.stylegan2.model.size == c.data.size
  with pytest.raises(ValueError, match="unknown config variant"):
    _config("huge")


@pytest.mark.slow
def test_tiny_demo_writes_its_outputs_and_resumes(tmp_path):
  results = main.run(_config("tiny"), str(tmp_path))
  for name in ("average.png", "grid.png", "pck.json", "report.md"):
    assert (tmp_path / name).exists(), name
  doc = json.loads((tmp_path / "pck.json").read_text())
  for r in (doc, doc["baseline_no_alignment"]):
    for key in ("pck@0.1", "pck@0.05", "pck@0.01"):
      assert 0.0 <= r[key] <= 1.0
    assert r["pck@0.01"] <= r["pck@0.05"] <= r["pck@0.1"]
  assert doc["perceptual_loss"] == "mse" and doc["pck@0.1"] == results["pck@0.1"]
  assert images.load_image(tmp_path / "average.png").shape == (32, 32, 3)
  assert np.isfinite(images.load_image(tmp_path / "grid.png")).all()
  assert "mse" in (tmp_path / "report.md").read_text()
  # Resume: every training stage's output exists, so only the evaluation runs again.
  again = main.run(_config("tiny"), str(tmp_path))
  assert again["pck@0.1"] == doc["pck@0.1"]
  assert again["seconds"]["stylegan2"] < 5 and again["seconds"]["gangealing"] < 5
