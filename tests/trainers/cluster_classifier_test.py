"""Cluster classifier (second stage, §3.2): trained on argmin labels of a tiny K=4 flips model, its trunk
starts as the similarity STN's, and it is added to the stage-1 export."""
import importlib.util
import json
import pathlib

import jax
import numpy as np

from jaxgeal import checkpoint
from jaxgeal.trainers import cluster_classifier, gangealing

REPO = pathlib.Path(__file__).resolve().parents[2]


def _config(name):
  spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
  m = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(m)
  return m.get_config("tiny")


def test_classifier_trains_on_assignments_and_joins_the_export(tmp_path):
  c1 = _config("cars")
  assert c1.stn.num_heads == 4 and c1.flips
  c1.total_steps = 2
  gangealing.train_and_evaluate(c1, str(tmp_path / "stage1"))
  c2 = _config("cars_classifier")
  c2.gangealing_model = str(tmp_path / "stage1" / "model")
  state = cluster_classifier.train_and_evaluate(c2, str(tmp_path / "stage2"))
  assert int(state.step) == c2.total_steps
  rows = [json.loads(l) for l in (tmp_path / "stage2" / "metrics.jsonl").read_text().splitlines()]
  assert all(np.isfinite(r["loss"]) and 0 <= r["accuracy"] <= 1 for r in rows)
  models = checkpoint.load_models(tmp_path / "stage1" / "model")
  kind, ccfg, cvars = models["classifier"]
  assert kind == "cluster_classifier" and ccfg["num_classes"] == 8       # K heads x (no flip, flip)
  logits_w = jax.tree_util.tree_leaves(cvars["params"])
  assert all(np.all(np.isfinite(x)) for x in logits_w)
