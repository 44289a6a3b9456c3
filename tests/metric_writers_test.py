"""jaxgeal.metric_writers: metrics.jsonl holds each step once and in order after a resume (lines past the resume
step, written by the killed run, are dropped atomically), images go to PNG files, scalars to TensorBoard."""

import json
import os

import numpy as np
import pytest

from jaxgeal import metric_writers


def _steps(path):
  return [json.loads(l)["step"] for l in path.read_text().splitlines()]


def _killed_run(workdir, last_step, every=10):
  w = metric_writers.create_default_writer(workdir, resume_step=0, tensorboard=False)
  for step in range(every, last_step + 1, every):
    w.write_scalars(step, {"loss": 1.0 / step})
  w.close()


def test_a_resumed_run_logs_each_step_once_in_order(tmp_path):
  _killed_run(tmp_path, 150)  # killed after logging step 150; its last checkpoint was step 100
  w = metric_writers.create_default_writer(tmp_path, resume_step=100, tensorboard=False)
  for step in range(110, 201, 10):
    w.write_scalars(step, {"loss": 0.0})
  w.close()
  assert _steps(tmp_path / "metrics.jsonl") == list(range(10, 201, 10))


def test_a_line_cut_short_by_the_kill_is_dropped(tmp_path):
  _killed_run(tmp_path, 30)
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 40, "lo')
  metric_writers.create_default_writer(tmp_path, resume_step=30, tensorboard=False).close()
  assert _steps(tmp_path / "metrics.jsonl") == [10, 20, 30]


def test_a_new_run_over_an_old_log_starts_it_afresh(tmp_path):
  _killed_run(tmp_path, 30)  # killed before its first checkpoint: the run starts again at 0
  w = metric_writers.create_default_writer(tmp_path, resume_step=0, tensorboard=False)
  w.write_scalars(10, {"loss": 2.0})
  w.close()
  assert _steps(tmp_path / "metrics.jsonl") == [10]


def test_without_a_resume_step_the_file_is_appended_to(tmp_path):
  _killed_run(tmp_path, 30)
  w = metric_writers.JsonlWriter(tmp_path / "metrics.jsonl")
  w.write_scalars(5, {"x": 1})
  w.close()
  assert _steps(tmp_path / "metrics.jsonl") == [10, 20, 30, 5]


def test_truncation_is_atomic(tmp_path, monkeypatch):
  _killed_run(tmp_path, 50)
  before = (tmp_path / "metrics.jsonl").read_text()

  def killed(*args):
    raise KeyboardInterrupt

  monkeypatch.setattr(os, "replace", killed)
  with pytest.raises(KeyboardInterrupt):
    metric_writers.truncate_after(tmp_path / "metrics.jsonl", 20)
  assert (tmp_path / "metrics.jsonl").read_text() == before


def test_images_go_to_png_files_and_everything_to_tensorboard(tmp_path):
  w = metric_writers.create_default_writer(tmp_path, resume_step=0)
  w.write_scalars(1, {"loss": 0.5})
  w.write_images(1, {"samples": np.zeros((8, 8, 3), np.float32)})
  w.close()
  assert (tmp_path / "visuals" / "samples_0000001.png").exists()
  events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  assert len(events) == 1 and events[0].stat().st_size > 100
