"""jaxgeal.main: config mistakes on the command line are one line on stderr (exit 2, nothing created), every
None-valued field of every config can be set from the command line, and a run's console holds jaxgeal's
progress lines (step / total, time left) but no library INFO chatter, which goes to <workdir>/log.txt."""

import json
import os
import re
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_dict

from jaxgeal import main
from tests import configs

REPO = configs.REPO
ALL = configs.all_configs()
HANG_TIMEOUT = 1200  # s; only guards against a hang (a tiny run's compile took ~2 min on a shared 2-core CPU)


def _parse(*args):
  argv = ["jaxgeal.main", *args]
  fv = flags.FlagValues()
  main.define_flags(fv, argv)
  main.parse_flags(argv, fv)
  return fv


def _error(*args) -> str:
  with pytest.raises(main.FlagsError) as e:
    _parse(*args)
  assert "\n" not in str(e.value) and "Traceback" not in str(e.value)
  return str(e.value)


def test_a_misspelled_override_names_the_nearest_fields():
  msg = _error("--config=configs/cats.py:tiny", "--workdir=/tmp/w", "--config.batchsize=4")
  assert msg.startswith("--config.batchsize: the config has no field 'batchsize'; did you mean --config.batch_size")
  msg = _error("--config=configs/cats.py", "--workdir=/tmp/w", "--config.generator.chekpoint=x")
  assert "did you mean --config.generator.checkpoint" in msg


def test_a_missing_config_file_a_bad_variant_and_a_bad_value_are_one_line():
  assert _error("--config=configs/nope.py", "--workdir=/tmp/w") == "--config=configs/nope.py: no such config file"
  assert _error("--config=configs/cats.py:huge", "--workdir=/tmp/w") == (
    "--config=configs/cats.py:huge: unknown config variant 'huge'; known: ['tiny']"
  )
  assert "--config.batch_size=abc" in _error("--config=configs/cats.py", "--workdir=/tmp/w", "--config.batch_size=abc")
  assert _error("--config=README.md", "--workdir=/tmp/w").startswith("--config=README.md: ")
  assert "--workdir" in _error("--config=configs/cats.py")


# A value of each type an optional field may declare, as typed on the command line and as parsed.
_VALUES = {
  int: ("3", 3),
  float: ("0.5", 0.5),
  str: ("some/dir", "some/dir"),
  bool: ("true", True),
  tuple: ("((4, 8), (8, 8))", ((4, 8), (8, 8))),
}


def _none_fields(config, prefix=""):
  for key, value in config.items():
    if isinstance(value, config_dict.ConfigDict):
      yield from _none_fields(value, f"{prefix}{key}.")
    elif value is None:
      yield f"{prefix}{key}", config.get_type(key)


@pytest.mark.parametrize("name,arg", ALL, ids=[f"{n}:{a}" if a else n for n, a in ALL])
def test_every_none_field_can_be_set_from_the_command_line(name, arg):
  spec = f"--config={REPO / 'configs' / name}" + (f":{arg}" if arg else "")
  fields = list(_none_fields(configs.load(REPO / "configs" / name, arg)))
  for field, field_type in fields:
    assert field_type in _VALUES, f"{name}:{arg} config.{field} is None with no declared type"
  overrides = [f"--config.{field}={_VALUES[t][0]}" for field, t in fields]
  config = _parse(spec, "--workdir=/tmp/w", *overrides).config
  for field, field_type in fields:
    node = config
    for key in field.split("."):
      node = node[key]
    assert node == _VALUES[field_type][1], field


def test_the_documented_optional_fields_are_among_them():
  config = _parse(
    "--config=configs/cats.py:tiny",
    "--workdir=/tmp/w",
    "--config.num_devices=4",
    "--config.generator.checkpoint=/models/g",
  ).config
  assert config.num_devices == 4 and config.generator.checkpoint == "/models/g"


def _run_main(*args, cwd=REPO):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  return subprocess.run(
    [sys.executable, "-m", "jaxgeal.main", *args],
    cwd=cwd,
    env=env,
    capture_output=True,
    text=True,
    timeout=HANG_TIMEOUT,
  )


def test_a_bad_value_or_a_misspelled_field_exits_2_with_one_line_and_creates_nothing(tmp_path):
  for override, message in (
    ("--config.batch_size=-2", "error: config.batch_size=-2: must be a positive integer"),
    ("--config.batchsize=4", "error: --config.batchsize: the config has no field"),
  ):
    proc = _run_main("--config=configs/cats.py:tiny", f"--workdir={tmp_path / 'w'}", override)
    assert proc.returncode == 2 and proc.stderr.startswith(message), proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""
    assert not (tmp_path / "w").exists()


def test_a_broken_model_json_is_one_line_naming_the_file(tmp_path):
  model = tmp_path / "generator"
  (model / "variables").mkdir(parents=True)
  (model / "model.json").write_text('{"format": "jaxgeal-models", "version": 1, "models": {')
  proc = _run_main("--config=configs/cats.py", f"--workdir={tmp_path / 'w'}", f"--config.generator.checkpoint={model}")
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {model / 'model.json'} is not valid JSON")
  assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_training_run_logs_progress_with_eta_and_no_library_info(tmp_path):
  workdir = tmp_path / "run"
  proc = _run_main(
    "--config=configs/cats.py:tiny",
    f"--workdir={workdir}",
    "--config.total_steps=4",
    "--config.log_every=2",
    "--config.vis_every=0",
    "--config.ckpt_every=4",
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  console = (proc.stdout + proc.stderr).splitlines()
  log = (workdir / main.LOG_FILE).read_text().splitlines()
  # Every INFO line on the console is jaxgeal's (the log file names each line's logger); libraries' INFO lines
  # (Orbax's, through absl) are in the log file only.
  ours = {l.split(" ", 1)[1] for l in log if l.startswith(("root ", "jaxgeal"))}
  info = [l for l in console if " INFO " in l]
  assert info and all(l in ours for l in info), [l for l in info if l not in ours]
  assert any(l.startswith("absl ") and " INFO " in l for l in log)
  assert not any(re.match(r"^I\d{4} ", l) for l in console)  # absl's own format
  progress = [l for l in console if re.search(r"step [24]/4 \(\d+%\), [\d.e+-]+ steps/s, ETA \d+m\d\ds", l)]
  assert len(progress) == 2, console
  assert [json.loads(l)["step"] for l in (workdir / "metrics.jsonl").read_text().splitlines()] == [2, 4]
  # Rerun in the same workdir with two STN heads: one line naming the array, nothing written.
  steps = sorted(p.name for p in (workdir / "checkpoints").iterdir())
  proc = _run_main("--config=configs/cats.py:tiny", f"--workdir={workdir}", "--config.stn.num_heads=2")
  assert proc.returncode == 2, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: {workdir} holds a checkpoint (step 4) of another model: "), last
  assert "ll/coefficients is (1, 1) in the checkpoint and (2, 1) with this config" in last, last
  assert "stn.num_heads 1 -> 2" in last and "Traceback" not in proc.stderr
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == steps
