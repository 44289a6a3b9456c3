"""The embedded demo (configs/demo.py, jaxgeal/trainers/demo.py): the `:tiny` variant runs every stage and
writes average.png, grid.png, pck.json (valid fractions, baseline, perceptual loss) and report.md; re-running
skips the finished stages. No PCK level is asserted: two training steps align nothing."""

import json
import pathlib

import jax
import numpy as np
import pytest

from jaxgeal import checkpoint, images, main
from jaxgeal.datasets import synthetic
from jaxgeal.evaluation import pck
from jaxgeal.models import stylegan2
from jaxgeal.trainers import config_variants, demo

REPO = pathlib.Path(__file__).resolve().parents[2]


def _config(arg):
  return config_variants.load_config(f"{REPO / 'configs' / 'demo.py'}:{arg or ''}")


def test_config_names_the_demo_trainer():
  c = _config(None)
  assert c.trainer == "demo" and "demo" in main.TRAINERS
  assert c.gangealing.perceptual.kind == "lcn" and c.stylegan2.model.size == c.data.size
  with pytest.raises(ValueError, match="unknown config variant"):
    _config("huge")


def test_the_shipped_generator_matches_the_demo_config_and_generates():
  c = _config(None)
  path = demo.shipped_generator(c)
  assert path is not None and (path / "model.json").exists()
  assert "shipped" in demo.generator_source(c)
  kind, gcfg, variables = checkpoint.load_model(path, "g_ema")
  G = stylegan2.generator_from_config(gcfg)
  x = G.apply(variables, jax.random.normal(jax.random.PRNGKey(0), (2, gcfg["style_dim"])), randomize_noise=False)
  assert kind == "generator" and x.shape == (2, 32, 32, 3) and np.isfinite(np.asarray(x)).all()
  assert demo.shipped_generator(_config("train_gan")) is None  # the recipe that made it trains from scratch
  # The harder category (clutter, wider rotation) fine-tunes the shipped generator on its own renders.
  # So do the two-framings category (half close-ups) and the two-poses ones (heads lean left or right; equally
  # often, or 70 / 30).
  for variant in ("complex", "closeup", "bimodal", "lopsided"):
    other = _config(variant)
    assert demo.shipped_generator(other) is None
    assert (demo.ASSETS.parent / other.stylegan2.init_from).resolve() == path.resolve()
    assert "fine-tuned in this run from assets/demo_stylegan2" in demo.generator_source(other)
  assert _config("complex").data.render.max_clutter > 0 and _config("closeup").data.render.closeup_prob == 0.5
  assert _config("bimodal").data.render.rotation_offset > _config("bimodal").data.render.max_rotation
  lopsided = _config("lopsided").data.render
  assert lopsided.clockwise_prob == 0.7 and lopsided.rotation_offset == _config("bimodal").data.render.rotation_offset


def test_every_config_renders_a_valid_category():
  # `data.render` holds the category's `RenderOptions` as a dict; the demo converts it once per stage.
  for variant in (None, "tiny", "train_gan", "complex", "closeup", "bimodal", "lopsided"):
    options = synthetic.RenderOptions(**_config(variant).data.render)
    assert options.mirror_prob == 0.0, "the demo's renders are not mirrored (it scores without flip inference)"


def test_the_report_names_the_equivariance_term_and_its_form():
  g = _config(None).gangealing
  assert "weight 30, not in the paper" in demo._equivariance_note(g)
  g.loss.equivariance_zoom_neutral = True
  assert "weight 30, zoom-neutral form" in demo._equivariance_note(g)
  g.loss.equivariance_weight = 0.0
  assert demo._equivariance_note(g) == "The paper's objective (no equivariance term)."


def test_a_missing_or_mismatched_shipped_generator_says_what_to_do(tmp_path):
  c = _config(None)
  c.stylegan2.pretrained = str(tmp_path / "nothing")
  with pytest.raises(FileNotFoundError, match="train_gan"):
    demo.shipped_generator(c)
  c = _config(None)
  c.stylegan2.model.style_dim = 128
  with pytest.raises(ValueError, match="style_dim"):
    demo.shipped_generator(c)


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
  assert doc["perceptual_loss"] == "lcn" and doc["pck@0.1"] == results["pck@0.1"]
  assert images.load_image(tmp_path / "average.png").shape == (32, 32, 3)
  assert np.isfinite(images.load_image(tmp_path / "grid.png")).all()
  report = (tmp_path / "report.md").read_text()
  assert "lcn" in report and "equivariance term (weight 30" in report and doc["equivariance_weight"] == 30.0
  # The scored renders are on disk, and the PCK CLI re-scores them with the trained model to the same numbers.
  out = tmp_path / "cli.json"
  assert (
    pck.main(
      [
        "--model",
        str(tmp_path / "gangealing" / "model"),
        "--annotations",
        str(tmp_path / "heldout"),
        "--no_flip",
        "--out",
        str(out),
      ]
    )
    == 0
  )
  cli = json.loads(out.read_text())
  assert [cli[k] for k in ("pck@0.1", "pck@0.05", "pck@0.01")] == [doc[k] for k in ("pck@0.1", "pck@0.05", "pck@0.01")]
  # Resume: every training stage's output exists, so only the evaluation runs again.
  again = main.run(_config("tiny"), str(tmp_path))
  assert again["pck@0.1"] == doc["pck@0.1"]
  assert again["seconds"]["stylegan2"] < 5 and again["seconds"]["gangealing"] < 5
