"""configs/stylegan2_256.py and configs/stylegan2_64.py: they load, name the StyleGAN2 trainer, and the `:tiny`
variant trains end to end through `python -m jaxgeal.main` on a prepared image folder, and fine-tunes its export."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from jaxgeal.datasets import image_folder, synthetic
from jaxgeal.trainers import config_variants

REPO = pathlib.Path(__file__).resolve().parents[2]
HANG_TIMEOUT = 1200  # s; a subprocess that runs longer has hung


def _load(name, arg=None):
  return config_variants.load_config(f"{REPO / 'configs' / name}:{arg or ''}")


@pytest.mark.parametrize("name,size", [("stylegan2_256.py", 256), ("stylegan2_64.py", 64)])
def test_configs_load_with_the_stylegan2_trainer(name, size):
  c = _load(name)
  assert c.trainer == "stylegan2" and c.model.size == size and c.data.source == ""
  t = _load(name, "tiny")
  assert t.model.size == 16 and t.total_steps <= 10 and t.batch_size <= 8


def test_paper_config_keeps_rosinality_defaults():
  c = _load("stylegan2_256.py")
  assert (c.batch_size, c.optim.lr, c.optim.r1, c.optim.d_reg_every, c.optim.g_reg_every) == (16, 0.002, 10.0, 16, 4)
  assert c.model.channel_multiplier == 2 and c.total_steps == 800_000


def test_unknown_variant_is_an_error():
  with pytest.raises(ValueError, match="unknown config variant"):
    _load("stylegan2_256.py", "huge")


@pytest.mark.slow
def test_tiny_variant_trains_two_steps_from_the_command_line(tmp_path):
  synthetic.write_folder(tmp_path / "images", n=6, size=16, seed=3)
  report = image_folder.build_image_folder(tmp_path / "images", tmp_path / "data", size=16)
  workdir = tmp_path / "run"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  cmd = [
    sys.executable,
    "-m",
    "jaxgeal.main",
    f"--config={REPO / 'configs' / 'stylegan2_256.py'}:tiny",
    f"--workdir={workdir}",
    f"--config.data.source={report.path}",
    "--config.total_steps=2",
    "--config.vis_every=0",
  ]
  # The timeout only guards against a hang: two compiled training steps took 225 s on a slow 2-core machine
  # and passed 300 s when other jobs shared its cores.
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=HANG_TIMEOUT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2]
  assert (workdir / "model" / "model.json").exists()
  # Fine-tuning from that export is one flag (a new run: its steps count from 0).
  tuned = tmp_path / "tuned"
  cmd = cmd[:4] + [
    f"--workdir={tuned}",
    f"--config.data.source={report.path}",
    "--config.vis_every=0",
    f"--config.init_from={workdir / 'model'}",
    "--config.total_steps=1",
  ]
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=HANG_TIMEOUT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert [json.loads(l)["step"] for l in (tuned / "metrics.jsonl").read_text().splitlines()] == [1]


def test_missing_data_source_is_reported(tmp_path):
  cmd = [
    sys.executable,
    "-m",
    "jaxgeal.main",
    f"--config={REPO / 'configs' / 'stylegan2_256.py'}:tiny",
    f"--workdir={tmp_path}",
  ]
  proc = subprocess.run(
    cmd, cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=HANG_TIMEOUT
  )
  assert proc.returncode == 2 and "data.source" in proc.stderr
