"""Bucket paths (gs://...) in training and model I/O, on a fake bucket (tests/fake_bucket.py: a local folder
behind epath's fsspec "gs" protocol and Orbax's TensorStore GCS driver): a tiny StyleGAN2 run, resumed, writes
its checkpoints, metrics, visuals, TensorBoard events, log and exported model into the bucket, the model loads
back from it, and nothing lands in a local folder named "gs:"."""

import json
import os
import pathlib

import jax
import numpy as np
import pytest

from jaxgeal import checkpoint, cli, main, metric_writers, storage
from tests.fake_bucket import fake_gcs, local_gs_folders
from tests.trainers.stylegan2_trainer_test import fake_data, tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  """The fake bucket's folder; the test runs in an empty local folder, checked for a stray gs: folder after."""
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  with fake_gcs(tmp_path / "fake_gcs") as root:
    yield root
  assert not local_gs_folders(cwd, REPO / "tests", REPO / "jaxgeal")


def test_paths_keep_their_bucket_and_local_ones_become_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert str(storage.as_path("gs://bkt/run") / "model") == "gs://bkt/run/model"
  assert storage.as_path("run") == tmp_path / "run"
  assert storage.is_remote("gs://bkt/run") and not storage.is_remote(tmp_path)


def test_find_files_lists_a_bucket_recursively(bucket):
  for d in ("a/1.0.0", "a/b/2.0.0"):
    (storage.as_path("gs://bkt/data") / d).mkdir(parents=True)
    (storage.as_path("gs://bkt/data") / d / "dataset_info.json").write_text("{}")
  found = storage.find_files(storage.as_path("gs://bkt/data"), "dataset_info.json")
  assert [str(p) for p in found] == [
    "gs://bkt/data/a/1.0.0/dataset_info.json",
    "gs://bkt/data/a/b/2.0.0/dataset_info.json",
  ]
  assert (bucket / "bkt/data/a/b/2.0.0/dataset_info.json").is_file()


def test_staged_file_uploads_on_sync_and_close_and_starts_from_the_bucket_copy(bucket):
  remote = storage.as_path("gs://bkt/run/log.txt")
  staged = storage.StagedFile(remote, sync_secs=3600)
  with open(staged.local, "a") as f:
    f.write("one\n")
  staged.sync()  # not due yet
  assert not remote.exists()
  staged.close()
  assert remote.read_text() == "one\n"
  again = storage.StagedFile(remote)
  assert again.local.read_text() == "one\n"
  again.close()


def test_a_missing_bucket_model_is_one_line_naming_it(bucket):
  with pytest.raises(checkpoint.ModelNotFoundError) as e:
    checkpoint.load_models("gs://bkt/nope")
  line = cli.error_line(e.value)
  assert line.startswith("gs://bkt/nope is not a jaxgeal model directory") and "\n" not in line


def test_metrics_resume_truncates_the_bucket_copy(bucket):
  w = metric_writers.JsonlWriter("gs://bkt/run/metrics.jsonl", resume_step=0)
  for s in (1, 2, 3):
    w.write_scalars(s, {"loss": s})
  w.close()
  metric_writers.JsonlWriter("gs://bkt/run/metrics.jsonl", resume_step=2).close()
  lines = (bucket / "bkt/run/metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["step"] for l in lines] == [1, 2]


def test_a_training_run_in_a_bucket_workdir_resumes_and_exports_a_loadable_model(bucket, monkeypatch):
  from jaxgeal.trainers import stylegan2 as trainer

  monkeypatch.setattr(storage, "SYNC_SECS", 3600.0)  # uploads only on close: one TensorBoard file per run
  monkeypatch.setattr(metric_writers, "TENSORBOARD_SYNC_SECS", 3600.0)
  workdir = "gs://bkt/runs/sg2"
  config = tiny_config(total_steps=2)
  config.vis_every = 2
  with main.log_to_file(workdir):
    trainer.train_and_evaluate(config, workdir, data=fake_data)
  config.total_steps = 4
  with main.log_to_file(workdir):
    state = trainer.train_and_evaluate(config, workdir, data=fake_data)  # resumes at step 2
  assert int(state.step) == 4

  run = bucket / "bkt/runs/sg2"
  assert [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
  assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["2", "4"]
  assert sorted(p.name for p in (run / "visuals").iterdir()) == ["samples_0000002.png", "samples_0000004.png"]
  events = list((run / "tensorboard").glob("events.out.tfevents.*"))
  assert len(events) == 2 and all(e.stat().st_size > 100 for e in events)
  log = (run / main.LOG_FILE).read_text()
  assert "gs://bkt/runs/sg2/checkpoints" in log and log.count("Finished saving checkpoint") >= 2  # both runs

  models = checkpoint.load_models(f"{workdir}/model")
  assert {"g", "g_ema", "d"} <= set(models)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(models["g_ema"][2]))
  assert os.listdir(pathlib.Path.cwd()) == []


@pytest.mark.parametrize("name", ["demo", "swapae_demo"])
def test_the_demos_refuse_a_bucket_workdir_in_one_line(name):
  import importlib

  import ml_collections

  trainer = importlib.import_module(f"jaxgeal.trainers.{name}")
  with pytest.raises(ValueError, match=r"^--workdir=gs://bkt/demo: the .* runs on one machine; give it a local"):
    trainer.train_and_evaluate(ml_collections.ConfigDict(), "gs://bkt/demo")


def test_align_and_swap_load_bucket_model_dirs_and_name_missing_ones_in_one_line(bucket, tmp_path):
  from jaxgeal.align import Aligner
  from jaxgeal.swap import SwappingAutoencoder
  from tests.align.conftest import make_model

  make_model("gs://bkt/models/stn")
  make_model(tmp_path / "local_stn")
  assert (bucket / "bkt/models/stn/model.json").is_file()
  remote, local = Aligner.load("gs://bkt/models/stn"), Aligner.load(tmp_path / "local_stn")
  jax.tree_util.tree_map(np.testing.assert_array_equal, remote.variables, local.variables)

  with pytest.raises(checkpoint.ModelNotFoundError, match=r"^model directory gs://bkt/none does not exist; "):
    Aligner.load("gs://bkt/none")
  with pytest.raises(checkpoint.ModelNotFoundError, match=r"^gs://bkt/none is not a jaxgeal model directory"):
    SwappingAutoencoder.load("gs://bkt/none")


def test_a_prepared_dataset_in_a_bucket_is_found_there_and_read_from_a_local_copy(bucket, tmp_path, monkeypatch):
  import shutil

  from jaxgeal.datasets import image_folder, reader
  from tests.datasets import fakes

  for i, value in enumerate((40, 80, 120)):
    fakes.write_image(tmp_path / "images" / f"{i}.png", fakes.solid(12, 12, value))
  image_folder.build_image_folder(tmp_path / "images", tmp_path / "out", size=8, pad="border")
  shutil.copytree(tmp_path / "out", bucket / "bkt/data")  # what `gcloud storage cp -r out gs://bkt/data` makes
  monkeypatch.setenv("JAXGEAL_CACHE", str(tmp_path / "cache"))

  local = reader.open_dataset(tmp_path / "out")
  remote = reader.open_dataset("jaxgeal_image_folder/8_border", data_dir="gs://bkt/data")
  assert repr(remote) == repr(local) and len(remote) == 3
  for i in range(3):
    np.testing.assert_array_equal(remote[i]["image"], local[i]["image"])
  copy = tmp_path / "cache/gs/bkt/data/jaxgeal_image_folder/8_border/1.0.0"
  assert remote.path == copy and (copy / "dataset_info.json").is_file()
  stamps = {p: p.stat().st_mtime_ns for p in copy.iterdir()}
  reader.open_dataset("gs://bkt/data")  # a second open downloads nothing
  assert {p: p.stat().st_mtime_ns for p in copy.iterdir()} == stamps


def test_tensorboard_in_a_bucket_uploads_one_closed_event_file_per_upload(bucket):
  w = metric_writers.TensorBoardXWriter("gs://bkt/run/tensorboard", purge_step=1, sync_secs=0)
  w.write_scalars(1, {"loss": 1.0})  # due at once: uploaded
  w.write_images(2, {"grid": np.zeros((4, 4, 3), np.uint8)})
  local = pathlib.Path(w._local_dir)  # pylint: disable=protected-access
  assert not [p for p in local.rglob("*") if p.is_file()]  # nothing left behind but what is not yet due
  w.close()
  events = sorted((bucket / "bkt/run/tensorboard").glob("events.out.tfevents.*"))
  assert len(events) == 2 and all(e.stat().st_size > 50 for e in events) and not local.exists()
