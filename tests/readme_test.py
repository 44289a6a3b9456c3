"""The README's commands work as written (issue 22), checked without running them.

README.md marks its quick shell blocks with an HTML comment `<!-- quick -->` on the line before the ```bash
fence. For every command in those blocks: `python -m jaxgeal.X` names a module that exists and every flag it
uses is one that module's parser (or subcommand parser) accepts, with every required option given; for
`jaxgeal.main` the config file, its `:variant` and every `--config.FIELD=VALUE` override parse as the real
command line parses them; `bash FILE` names a file of the repository. Every repository path that README.md,
launch/README.md and benchmarks/README.md mention (configs/..., launch/..., docs/*.png, benchmarks/*.md, ...)
exists. Nothing is trained or converted, so the whole file takes seconds; tests/readme_run_test.py runs the
commands.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import pathlib
import re
import shlex

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from jaxgeal.trainers import config_variants

REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / "README.md"
GUIDES = (README, REPO / "launch" / "README.md", REPO / "benchmarks" / "README.md")
QUICK_BLOCK = re.compile(r"^<!-- quick -->\n```bash\n(.*?)^```", re.S | re.M)
# A repository path in prose or code: one of these top-level folders, then at least one name.
REPO_PATH = re.compile(
  r"(?<![\w/.-])((?:configs|launch|docs|benchmarks|scripts|jaxgeal|tests|\.ci)/[\w./*-]*\w)"
  r"(:\w+)?"
)
MARKDOWN_LINK = re.compile(r"\]\(([^)#\s]+)\)|<img src=\"([^\"]+)\"")


def quick_blocks(text: str) -> list[str]:
  return QUICK_BLOCK.findall(text)


def commands(block: str) -> list[list[str]]:
  """The block's commands as argument lists: continuation lines joined, comments dropped."""
  argvs = []
  for line in block.replace("\\\n", " ").splitlines():
    argv = shlex.split(line, comments=True)
    if argv:
      argvs.append(argv)
  return argvs


def quick_commands() -> list[list[str]]:
  return [argv for block in quick_blocks(README.read_text()) for argv in commands(block)]


def _ids(argvs):
  return [" ".join(a)[:70] for a in argvs]


def test_readme_has_quick_blocks_with_jaxgeal_commands():
  blocks = quick_blocks(README.read_text())
  assert len(blocks) >= 4, "README.md lost its <!-- quick --> blocks"
  modules = {argv[2] for argv in quick_commands() if len(argv) > 2 and argv[1] == "-m"}
  assert {
    "jaxgeal.main",
    "jaxgeal.datasets.prepare",
    "jaxgeal.convert",
    "jaxgeal.sample",
    "jaxgeal.align",
    "jaxgeal.evaluation.pck",
  } <= modules


def test_block_parsing_joins_continuations_and_drops_comments():
  block = "python -m jaxgeal.x --a 1 \\\n    --b=2   # note\n\n# only a comment\nbash scripts/setup.sh\n"
  assert commands(block) == [["python", "-m", "jaxgeal.x", "--a", "1", "--b=2"], ["bash", "scripts/setup.sh"]]
  text = "<!-- quick -->\n```bash\nA\n```\n\n```bash\nB\n```\n"
  assert quick_blocks(text) == ["A\n"]


def _help(module_name: str, args: list[str]) -> str:
  """What `python -m module_name *args --help` prints, run in this process through the module's main(argv)."""
  spec = importlib.util.find_spec(module_name)
  assert spec is not None, f"README runs python -m {module_name}, which does not exist"
  if spec.submodule_search_locations is not None:  # a package runs as its __main__
    module_name += ".__main__"
  module = importlib.import_module(module_name)
  out = io.StringIO()
  with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
    module.main([*args, "--help"])
  assert exit_info.value.code == 0, f"python -m {module_name} {' '.join(args)} --help failed"
  return out.getvalue()


def _usage(help_text: str) -> str:
  return help_text.split("\n\n", 1)[0]


def _check_argparse_command(module: str, args: list[str]):
  text, where = _help(module, []), module
  choices = re.search(r"^positional arguments:\n +\{([\w,-]+)\}", text, re.M)
  if choices:  # a command with subcommands: the first argument names one
    assert args and args[0] in choices.group(1).split(","), f"{module}: {args[:1]} is not one of {{{choices[1]}}}"
    text, where = _help(module, args[:1]), f"{module} {args[0]}"
  used = {a.split("=", 1)[0] for a in args if a.startswith("--")}
  for flag in used:
    assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), f"{where}: no flag {flag}"
  # Required options are the ones the usage line shows outside [brackets].
  required = set(re.findall(r"(?<![\w-])(--[\w-]+)", re.sub(r"\[[^\]]*\]", "", _usage(text))))
  assert required <= used, f"{where}: the README leaves out required {sorted(required - used)}"


def _check_main_command(args: list[str]):
  """Parses the arguments as `python -m jaxgeal.main` does: its flags, the config file and its overrides."""
  main = importlib.import_module("jaxgeal.main")
  known = {f.name for f in main.FLAGS.get_key_flags_for_module(main)}
  fv = flags.FlagValues()
  argv = ["jaxgeal.main", *args]
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=False, sys_argv=argv)
  for name in known - {"config"}:
    flags.DEFINE_string(name, None, "", flag_values=fv)
  fv(argv)  # unknown flags, a bad :variant, unknown config fields and badly typed values raise here
  assert isinstance(fv.config, ml_collections.ConfigDict), f"jaxgeal.main: --config does not load: {args}"
  for name in ("config", "workdir"):
    assert fv[name].present, f"jaxgeal.main needs --{name}: {args}"


@pytest.mark.parametrize("argv", quick_commands(), ids=_ids(quick_commands()))
def test_quick_command_parses(argv):
  if argv[0] == "bash":
    assert (REPO / argv[1]).is_file(), f"README runs bash {argv[1]}, which does not exist"
    return
  assert re.fullmatch(r"(\.venv/bin/)?python3?", argv[0]) and argv[1] == "-m", f"unchecked command kind: {argv}"
  module, args = argv[2], argv[3:]
  if module == "jaxgeal.main":
    _check_main_command(args)
  elif module.startswith("jaxgeal."):
    _check_argparse_command(module, args)
  else:  # a tool such as pytest: it must at least be installed
    assert importlib.util.find_spec(module) is not None, f"README runs python -m {module}, not installed"


def mentioned_paths(guide: pathlib.Path) -> list[tuple[str, str | None]]:
  """(repository path, :variant or None) for every path the guide mentions; links resolve from its folder."""
  text = guide.read_text()
  found = [(m.group(1), m.group(2)) for m in REPO_PATH.finditer(text)]
  for link in MARKDOWN_LINK.finditer(text):
    target = link.group(1) or link.group(2)
    if "://" not in target:
      found.append((str((guide.parent / target).resolve().relative_to(REPO)), None))
  return found


@pytest.mark.parametrize("guide", GUIDES, ids=lambda g: str(g.relative_to(REPO)))
def test_every_mentioned_path_exists(guide):
  assert guide.is_file()
  paths = mentioned_paths(guide)
  assert paths
  missing = [p for p, _ in paths if not (list(REPO.glob(p)) if "*" in p else (REPO / p).exists())]
  assert not missing, f"{guide.name} mentions paths that do not exist: {sorted(set(missing))}"
  for path, variant in paths:  # configs/x.py:variant names a variant that exists
    if variant and path.startswith("configs/"):
      config = config_variants.load_config(f"{REPO / path}{variant}")
      assert isinstance(config, ml_collections.ConfigDict), f"{path}{variant}"


def test_path_scan_finds_paths_and_variants():
  assert [m.groups() for m in REPO_PATH.finditer("run `configs/demo.py:tiny`; see docs/demo_grid.png.")] == [
    ("configs/demo.py", ":tiny"),
    ("docs/demo_grid.png", None),
  ]
  assert not REPO_PATH.search("python -m jaxgeal.align and workdirs/demo/heldout")


def test_console_scripts_named_are_the_installed_ones():
  try:
    import tomllib
  except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")
  scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
  named = set(re.findall(r"`(jaxgeal-[a-z]+)`", README.read_text()))
  assert named == set(scripts), f"README.md names {sorted(named)}, pyproject.toml installs {sorted(scripts)}"


def test_flags_are_spelled_with_underscores():
  # Flags are lower_snake_case (tests/command_lines_test.py): a dash inside one is an old spelling.
  dashed = re.findall(r"(?<![\w-])--[a-z0-9]+-[\w-]+", README.read_text())
  assert not dashed, f"README.md spells flags with dashes: {sorted(set(dashed))}"
