"""Cluster classifier (second stage, §3.2): trained on argmin labels of a tiny K=4 flips model, it is added to
the stage-1 export (which loads back to the same logits, the stage-1 networks untouched), a killed run resumes
exactly, and 8 fake CPU devices train as 1 (data parallel). One stage-1 model and one full stage-2 run
serve all the tests."""

import json
import pathlib
import shutil

import jax
import numpy as np
import pytest

from jaxgeal import align, checkpoint
from jaxgeal.models import cluster_classifier as cls_lib
from jaxgeal.trainers import cluster_classifier, config_variants, gangealing
from tests.trainers import multidevice

REPO = pathlib.Path(__file__).resolve().parents[2]


def _config(name):
  return config_variants.load_config(REPO / "configs" / f"{name}.py:tiny")


def stage2_config(stage1_model, dest, total_steps=4, num_devices=None, batch_size=None):
  """cars_classifier:tiny on a private copy (dest/model) of the stage-1 export, which stage 2 writes into."""
  dest = pathlib.Path(dest)
  if not (dest / "model").exists():
    shutil.copytree(stage1_model, dest / "model")
  c = _config("cars_classifier")
  c.gangealing_model = str(dest / "model")
  c.total_steps = total_steps
  c.log_every = 1  # block on every step: concurrent collectives can deadlock on 2 cores
  c.ckpt_every = 2
  c.num_devices = num_devices
  if batch_size:
    c.batch_size = batch_size
  return c


def rows(workdir):
  return [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def _assert_trees_equal(a, b, what):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb) > 0, what
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=what)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
  c1 = _config("cars")
  assert c1.stn.num_heads == 4 and c1.flips
  c1.total_steps = 2
  workdir = tmp_path_factory.mktemp("stage1")
  gangealing.train_and_evaluate(c1, str(workdir))
  return workdir / "model"


@pytest.fixture(scope="module")
def full_run(stage1, tmp_path_factory):
  dest = tmp_path_factory.mktemp("full")
  state = cluster_classifier.train_and_evaluate(stage2_config(stage1, dest), str(dest / "work"))
  return state, dest


def test_classifier_trains_on_assignments_and_joins_the_export(full_run):
  state, dest = full_run
  assert int(state.step) == 4
  metrics = rows(dest / "work")
  assert [r["step"] for r in metrics] == [1, 2, 3, 4]
  assert all(np.isfinite(r["loss"]) and 0 <= r["accuracy"] <= 1 for r in metrics)
  kind, ccfg, cvars = checkpoint.load_models(dest / "model")["classifier"]
  assert kind == "cluster_classifier" and ccfg["num_classes"] == 8  # K heads x (no flip, flip)
  assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(cvars["params"]))


def test_a_killed_run_resumes_exactly(stage1, full_run, tmp_path):
  full, full_dest = full_run
  cluster_classifier.train_and_evaluate(stage2_config(stage1, tmp_path, 2), str(tmp_path / "work"))  # killed
  resumed = cluster_classifier.train_and_evaluate(stage2_config(stage1, tmp_path, 4), str(tmp_path / "work"))
  assert int(resumed.step) == 4
  _assert_trees_equal(full.params, resumed.params, "params")
  _assert_trees_equal(full.opt, resumed.opt, "adam state")
  assert [r["step"] for r in rows(tmp_path / "work")] == [1, 2, 3, 4]
  assert rows(tmp_path / "work")[-1]["loss"] == rows(full_dest / "work")[-1]["loss"]


def test_the_exported_classifier_loads_back_to_the_trained_logits_beside_the_untouched_stage1(stage1, full_run):
  state, dest = full_run
  exported = checkpoint.load_models(dest / "model")
  _assert_trees_equal(state.params, exported["classifier"][2]["params"], "classifier params")
  before = checkpoint.load_models(stage1)
  assert set(exported) == set(before) | {"classifier"}
  for name, (kind, cfg, variables) in before.items():
    assert exported[name][:2] == (kind, cfg), name
    _assert_trees_equal(variables, exported[name][2], name)
  # What alignment loads (jaxgeal.align) computes the logits of the classifier the trainer trained.
  aligner = align.Aligner.load(dest / "model")
  _, scfg, _ = before["t_ema"]
  trained = cls_lib.ResnetClassifier(
    size=scfg["flow_size"],
    num_classes=8,
    supersize=scfg.get("supersize"),
    channels=tuple(tuple(c) for c in scfg["channels"]),
  )
  x = jax.random.uniform(jax.random.PRNGKey(3), (2, scfg["flow_size"], scfg["flow_size"], 3), minval=-1, maxval=1)
  np.testing.assert_array_equal(
    aligner.classifier.apply(aligner.classifier_variables, x), trained.apply({"params": state.params}, x)
  )


MULTI_DEVICE = """
from tests.trainers.cluster_classifier_test import stage2_config, rows
from jaxgeal.trainers import cluster_classifier
out, params = {}, {}
for name, n in (("1", 1), ("8", 8)):
  c = stage2_config(sys.argv[1] + "/stage1_model", sys.argv[1] + f"/{name}", 2, num_devices=n, batch_size=8)
  state = cluster_classifier.train_and_evaluate(c, sys.argv[1] + f"/{name}/work")
  params[name] = jax.device_get(state.params)
  out[name] = rows(sys.argv[1] + f"/{name}/work")
c = stage2_config(sys.argv[1] + "/stage1_model", sys.argv[1] + "/d0", 0, num_devices=1)   # no step: initial weights
params["0"] = jax.device_get(cluster_classifier.train_and_evaluate(c, sys.argv[1] + "/d0/work").params)
leaves = {n: jax.tree_util.tree_leaves(p) for n, p in params.items()}
diff = lambda a, b: max(float(abs(x - y).max()) for x, y in zip(leaves[a], leaves[b], strict=True))
out.update(param_diff=diff("1", "8"), param_step=diff("1", "0"))
print(json.dumps(out))
"""


@pytest.mark.slow
def test_eight_devices_train_as_one(stage1, tmp_path):
  """8 devices (data parallel) give the losses and weights of 1. (FSDP meshes: the GANgealing, StyleGAN2 and
  Swapping Autoencoder trainers' tests, whose steps hold the larger weights.)"""
  shutil.copytree(stage1, tmp_path / "stage1_model")
  out = multidevice.run_with_fake_devices(MULTI_DEVICE, tmp_path)
  assert [r["step"] for r in out["1"]] == [r["step"] for r in out["8"]] == [1, 2]
  for r1, r8 in zip(out["1"], out["8"]):
    for k in ("loss", "accuracy"):
      np.testing.assert_allclose(r8[k], r1[k], rtol=1e-4, atol=1e-6, err_msg=f"step {r1['step']} {k}")
  # Two Adam steps moved the weights by param_step; the meshes agree far more closely than that.
  assert out["param_diff"] < 1e-3 * out["param_step"], out
