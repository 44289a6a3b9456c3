"""Every command line spells its flags one way (issue 22): lower_snake_case long options, as the config fields
and absl's `--config.batch_size` are spelled, no abbreviations and no second spellings; each `python -m` tool
is also a console script ([project.scripts] in pyproject.toml) with the same arguments and exit code."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

try:
  import tomllib
except ImportError:  # Python 3.10
  tomllib = pytest.importorskip("tomli")

REPO = pathlib.Path(__file__).resolve().parents[1]
TOOLS = {  # console script -> the module `python -m` runs
  "jaxgeal-train": "jaxgeal.main",
  "jaxgeal-prepare": "jaxgeal.datasets.prepare",
  "jaxgeal-convert": "jaxgeal.convert",
  "jaxgeal-sample": "jaxgeal.sample",
  "jaxgeal-align": "jaxgeal.align",
  "jaxgeal-swap": "jaxgeal.swap",
  "jaxgeal-pck": "jaxgeal.evaluation.pck",
}
ARGPARSE_MODULES = ["jaxgeal.datasets.prepare", "jaxgeal.convert.__main__", "jaxgeal.sample", "jaxgeal.align.__main__"]
ARGPARSE_MODULES += ["jaxgeal.evaluation.pck", "jaxgeal.swap.__main__"]
BENCHMARKS = sorted(p.stem for p in (REPO / "benchmarks").glob("*.py"))
LONG_OPTION = re.compile(r"--[a-z][a-z0-9]*(_[a-z0-9]+)*")
SHORT_OPTION = re.compile(r"-[a-zA-Z?]")


def _benchmark(name):
  return importlib.import_module(f"benchmarks.{name}")


def _with_subparsers(name: str, parser: argparse.ArgumentParser):
  """(name, parser) for the parser and every subcommand's parser below it."""
  yield name, parser
  for action in parser._actions:  # pylint: disable=protected-access
    if isinstance(action, argparse._SubParsersAction):  # pylint: disable=protected-access
      for command, sub in action.choices.items():
        yield from _with_subparsers(f"{name} {command}", sub)


def _parsers():
  found = []
  for module in ARGPARSE_MODULES:
    found += _with_subparsers(module, importlib.import_module(module).build_parser())
  for name in BENCHMARKS:
    found += _with_subparsers(f"benchmarks/{name}.py", _benchmark(name).build_parser())
  return found


def test_every_parser_is_found():
  names = {name for name, _ in _parsers()}
  assert {
    "jaxgeal.align.__main__ congeal-dataset",
    "jaxgeal.datasets.prepare cub",
    "jaxgeal.convert.__main__ lpips",
  } <= names
  assert len(names) == (1 + 7) + (1 + 4) + (1 + 4) + 1 + 1 + (1 + 5) + len(BENCHMARKS)


def test_flags_are_lower_snake_case_and_abbreviations_are_refused():
  for name, parser in _parsers():
    assert parser.allow_abbrev is False, f"{name}: allow_abbrev"
    for action in parser._actions:  # pylint: disable=protected-access
      for option in action.option_strings:
        pattern = LONG_OPTION if option.startswith("--") else SHORT_OPTION
        assert pattern.fullmatch(option), f"{name}: {option} is not spelled --lower_snake_case"


def _align(argv):
  return ["congeal", "--model", "m", "--input", "i", "--out", "o", *argv]


def _prepare(argv):
  return ["spair", "--path", "p", "--out", "o", "--category", "cat", *argv]


# An old spelling or an abbreviation, with every required argument given: argparse's one-line usage error.
REFUSED = [
  ("jaxgeal.align.__main__", _align(["--padding-mode", "border"]), "--padding-mode"),
  ("jaxgeal.align.__main__", _align(["--no-flip"]), "--no-flip"),
  ("jaxgeal.align.__main__", _align(["--batch", "3"]), "--batch"),  # a prefix of --batch_size
  ("jaxgeal.align.__main__", _align(["--padding", "border"]), "--padding"),
  ("jaxgeal.align.__main__", _align(["--flow-image"]), "--flow-image"),
  ("jaxgeal.sample", ["--checkpoint", "m", "--batch-size", "2"], "--batch-size"),
  ("jaxgeal.sample", ["--checkpoint", "m", "--n-mean", "2"], "--n-mean"),
  ("jaxgeal.datasets.prepare", _prepare(["--spair_split", "test"]), "--spair_split"),
  ("jaxgeal.datasets.prepare", _prepare(["--n_worker", "2"]), "--n_worker"),
  ("jaxgeal.datasets.prepare", _prepare(["--max-images", "2"]), "--max-images"),
  ("jaxgeal.datasets.prepare", _prepare(["--max_i", "2"]), "--max_i"),
  ("jaxgeal.evaluation.pck", ["--model", "m", "--annotations", "a", "--no_flip_inference"], "--no_flip_inference"),
  ("jaxgeal.convert.__main__", ["gangealing", "src.pt", "out", "--flow", "64"], "--flow"),
  (
    "jaxgeal.swap.__main__",
    ["swap", "--model", "m", "--structure", "a", "--texture", "b", "--out", "o", "--batch", "2"],
    "--batch",
  ),
]


@pytest.mark.parametrize("module,argv,flag", REFUSED, ids=[f"{m.split('.')[-1]} {f}" for m, _, f in REFUSED])
def test_old_spellings_and_abbreviations_are_unknown_arguments(module, argv, flag, capsys):
  with pytest.raises(SystemExit) as e:
    importlib.import_module(module).main(argv)
  err = capsys.readouterr().err
  assert e.value.code == 2 and re.search(f"unrecognized arguments: {flag}( |$)", err.strip().splitlines()[-1]), err


def _scripts() -> dict[str, str]:
  return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def test_each_python_m_tool_is_a_console_script_of_the_same_module():
  scripts = _scripts()
  assert sorted(scripts) == sorted(TOOLS)
  for name, target in scripts.items():
    module = target.split(":")[0]
    assert module.removesuffix(".__main__") == TOOLS[name], f"{name} = {target!r}"


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_console_script_help_exits_0(name, monkeypatch, capsys):
  module, attr = _scripts()[name].split(":")
  fn = getattr(importlib.import_module(module), attr)
  assert callable(fn)
  if module == "jaxgeal.main":  # absl's app.run installs its logging handler: run it as pip's script would.
    proc = _run_script(name, "--help")
    assert proc.returncode == 0 and "--workdir" in proc.stdout, proc.stderr[-2000:]
    return
  monkeypatch.setattr(sys, "argv", [name, "--help"])
  with pytest.raises(SystemExit) as e:
    sys.exit(fn())  # what pip's generated script does
  assert e.value.code == 0 and capsys.readouterr().out.startswith("usage:")


def _run_script(name, *args):
  """The console script `name` as pip generates it (import the target, sys.exit with what it returns)."""
  module, attr = _scripts()[name].split(":")
  code = f"import sys; sys.argv[0] = {name!r}; from {module} import {attr}; sys.exit({attr}())"
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True)


def test_train_script_exits_with_mains_code(tmp_path):
  (tmp_path / "file").write_text("x")
  proc = _run_script("jaxgeal-train", "--config=configs/demo.py:tiny", f"--workdir={tmp_path / 'file' / 'w'}")
  assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error:"), proc.stderr[-2000:]
  assert "is a file, not a directory" in proc.stderr and (tmp_path / "file").read_text() == "x"
