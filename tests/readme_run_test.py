"""The README's quick blocks run in order, as written, on tiny settings (issue 22).

Every command of README.md's `<!-- quick -->` shell blocks is run in README order in one fresh working
directory (the repository's `configs/` linked into it) after an explicit, documented change to tiny settings
(`TINY` below: text replacements on the command line and appended flags, e.g. `configs/cats.py` ->
`configs/cats.py:tiny`, `--size 256` -> `--size 16`); the inputs a block expects are made first (a folder of
rendered images for `MY_IMAGES`, the upstream reference fixtures from `$JAXGEAL_FIXTURES` under the names of the
published checkpoints: commands that need an absent fixture, and those that read what such a command writes, are
skipped). Each command must exit 0 and write what the README says it writes. A quick command without a `TINY`
entry fails the mapping test, naming its block.

`python -m jaxgeal.main` runs as a subprocess (as the README runs it, inheriting the test session's compilation
cache and XLA flags). The argparse tools run in this process through `runpy.run_module(..., run_name="__main__")`,
which is what `python -m` does, so that the test pays one interpreter start instead of fifteen (CI budget). The
tiny StyleGAN2 run compiles what tests/trainers/stylegan2_configs_test.py compiles (shared through the persistent
cache); the 16 px GANgealing run that reads its export is the one new program (~20 s to compile). Measured on the
shared 2-core CPU machine: 86 s with a warm compilation cache, 260 s with an empty one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import pathlib
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from tests import fixtures
from tests.readme_test import README, REPO, commands, quick_blocks

HANG_TIMEOUT = 1200  # s; only guards against a hang


@dataclasses.dataclass(frozen=True)
class Tiny:
  """How one README command runs on tiny settings.

  pattern: regular expression that the README command line (continuations joined) must match.
  replace: (old, new) text replacements applied to that command line, in order.
  append: arguments added at the end (config overrides that shrink a run).
  inputs: what the command reads that the README expects the user to have (keys of INPUTS), made first.
  outputs: paths the command writes (the README says so), checked after it ran.
  skip: why the command is not run (installs, network, the test suite itself).
  """

  pattern: str
  replace: tuple[tuple[str, str], ...] = ()
  append: tuple[str, ...] = ()
  inputs: tuple[str, ...] = ()
  outputs: tuple[str, ...] = ()
  skip: str | None = None


# The 16 px StyleGAN2 (configs/stylegan2_256.py:tiny) feeds GANgealing, so cats.py:tiny's STN is shrunk to 16 px
# (a flow STN's trunk reads widths down to flow_size / 16).
_GG_16PX = (
  "--config.real_size=16",
  "--config.stn.flow_size=16",
  "--config.stn.channels=((1, 8), (2, 8), (4, 8), (8, 8), (16, 8))",
  "--config.total_steps=2",
  "--config.log_every=1",
  "--config.vis_every=0",
  "--config.ckpt_every=2",
)

TINY = (
  Tiny(r"^bash scripts/setup\.sh$", skip="installs the environment (network)"),
  Tiny(r"-m pytest", skip="the test suite itself"),
  # Train on your images.
  Tiny(
    r"jaxgeal\.datasets\.prepare folder --path MY_IMAGES",
    replace=(("--size 256", "--size 16"),),
    inputs=("MY_IMAGES",),
    outputs=("data/jaxgeal_image_folder/16_center/1.0.0",),
  ),
  Tiny(
    r"jaxgeal\.main --config=configs/stylegan2_256\.py ",
    replace=(("configs/stylegan2_256.py", "configs/stylegan2_256.py:tiny"), ("256_center", "16_center")),
    append=("--config.total_steps=2", "--config.vis_every=0"),  # as tests/trainers/stylegan2_configs_test.py
    outputs=("workdirs/sg2/model/model.json", "workdirs/sg2/metrics.jsonl"),
  ),
  Tiny(
    r"jaxgeal\.convert lpips simclr_vgg_phase150\.pt pretrained/vgg_ssl$",
    inputs=("simclr_vgg_phase150.pt",),
    outputs=("pretrained/vgg_ssl/model.json",),
  ),
  Tiny(
    r"jaxgeal\.main --config=configs/cats\.py .*--config\.generator\.checkpoint=workdirs/sg2/model",
    replace=(("configs/cats.py", "configs/cats.py:tiny"),),  # tiny: the MSE loss, not vgg_ssl
    append=_GG_16PX,
    outputs=("workdirs/gg/model/model.json", "workdirs/gg/metrics.jsonl"),
  ),
  Tiny(
    r"jaxgeal\.align congeal --model workdirs/gg/model --input MY_IMAGES --out aligned$",
    outputs=("aligned/average.png", "aligned/0.png"),
  ),
  # Bring a published checkpoint.
  Tiny(
    r"jaxgeal\.convert stylegan2 550000\.pt models/church$",
    inputs=("550000.pt",),
    outputs=("models/church/model.json",),
  ),
  Tiny(
    r"jaxgeal\.sample --checkpoint models/church ",
    replace=(("--seeds 0-15", "--seeds 0-1"),),
    inputs=("models/church",),
    outputs=("grid.png",),
  ),
  Tiny(r"jaxgeal\.convert gangealing cat\.pt models/cat$", inputs=("cat.pt",), outputs=("models/cat/model.json",)),
  Tiny(
    r"jaxgeal\.align congeal --model models/cat --input my_cats --out aligned ",
    inputs=("models/cat", "my_cats"),
    outputs=("aligned/average.png", "aligned/cat0.png"),
  ),
  Tiny(
    r"jaxgeal\.align propagate --model models/cat --input my_cats --label edit\.png --out edited ",
    inputs=("models/cat", "my_cats", "edit.png"),
    outputs=("edited/cat0.png",),
  ),
  # Swapping Autoencoder.
  Tiny(
    r"jaxgeal\.convert swapae church/latest_checkpoint\.pth models/swap_church",
    inputs=("church/latest_checkpoint.pth",),
    outputs=("models/swap_church/model.json",),
  ),
  Tiny(
    r"jaxgeal\.swap grid --model models/swap_church --structure a\.jpg b\.jpg --texture styles --out swap_grid\.png$",
    inputs=("models/swap_church", "a.jpg", "b.jpg", "styles"),
    outputs=("swap_grid.png",),
  ),
  Tiny(
    r"jaxgeal\.swap interpolate --model models/swap_church .*--gif --out mix\.gif$",
    inputs=("models/swap_church", "a.jpg", "c.jpg"),
    outputs=("mix.gif",),
  ),
  Tiny(
    r"jaxgeal\.swap edit --model models/swap_church .*--folder photos .*--out texture_edit\.png$",
    inputs=("models/swap_church", "a.jpg", "photos"),
    outputs=("texture_edit.png",),
  ),
  # Evaluate.
  Tiny(
    r"jaxgeal\.datasets\.prepare spair --path SPair-71k --category cat --split test --out data ",
    replace=(("--size 256", "--size 32"),),
    inputs=("SPair-71k",),
    outputs=("data/jaxgeal_spair",),
  ),
  Tiny(
    r"jaxgeal\.evaluation\.pck --model models/cat --dataset DATASET_PRINTED_ABOVE ",
    replace=(("--num_bootstrap 100", "--num_bootstrap 4"),),
    inputs=("models/cat", "DATASET_PRINTED_ABOVE"),
    outputs=("pck.json",),
  ),
  Tiny(
    r"jaxgeal\.evaluation\.pck --model models/cub --annotations cub/ann\.json --pairs random ",
    replace=(("--num_pck_pairs 10000", "--num_pck_pairs 2"),),
    inputs=("models/cub", "cub/ann.json"),
  ),
)


# -- the inputs the README expects a user to have ---------------------------------------------------------------


def _rendered_folder(path: pathlib.Path, n: int, size: int, prefix: str = "", ext: str = ".png"):
  """n small renders of the synthetic category (jaxgeal.datasets.synthetic) as image files."""
  from jaxgeal import images
  from jaxgeal.datasets import synthetic

  path.mkdir(parents=True, exist_ok=True)
  for i in range(n):
    images.save_image(path / f"{prefix}{i}{ext}", synthetic.render(3, i, size)["image"])


def _fixture(name: str):
  def make(path: pathlib.Path):
    source = fixtures.fixture_root() / name
    if not source.is_file():
      return f"fixture {source} is absent"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(source)

  return make


def _render(seed: int, size: int):
  def make(path: pathlib.Path):
    from jaxgeal import images
    from jaxgeal.datasets import synthetic

    images.save_image(path, synthetic.render(seed, 0, size)["image"])

  return make


def _edit_label(path: pathlib.Path):
  from PIL import Image

  rgba = np.zeros((32, 32, 4), np.uint8)
  rgba[8:24, 8:24] = (255, 0, 0, 200)
  Image.fromarray(rgba, "RGBA").save(path)


def _spair(path: pathlib.Path):
  from tests.datasets import fakes, spair_test

  fakes.make_spair(path, "cat", 18, spair_test.IMAGES, [spair_test.PAIR_AB, spair_test.PAIR_BC])


def _cub_annotations(path: pathlib.Path):
  from jaxgeal.datasets import synthetic

  annotations = synthetic.write_folder(path.parent, n=4, size=32, seed=5)
  annotations.rename(path)


def _cub_model(path: pathlib.Path):
  if not pathlib.Path("models/cat").is_dir():
    return "models/cat (its stand-in) was not converted"
  shutil.copytree("models/cat", path)


INPUTS = {
  # Train on your images: renders at the size of configs/stylegan2_256.py:tiny, as stylegan2_configs_test's.
  "MY_IMAGES": lambda p: _rendered_folder(p, 6, 16),
  "simclr_vgg_phase150.pt": _fixture("simclr_vgg_phase150.pt"),
  # The published checkpoints: the upstream fixtures (random weights) in the same layouts.
  "550000.pt": _fixture("stylegan2_g.pt"),
  "cat.pt": _fixture("stn.pt"),
  "my_cats": lambda p: _rendered_folder(p, 2, 48, prefix="cat"),
  "edit.png": _edit_label,
  "church/latest_checkpoint.pth": _fixture("swapae.pt"),
  "a.jpg": _render(1, 64),
  "b.jpg": _render(2, 64),
  "c.jpg": _render(3, 64),
  "styles": lambda p: _rendered_folder(p, 2, 64, prefix="style", ext=".jpg"),
  "photos": lambda p: _rendered_folder(p, 3, 64, prefix="photo", ext=".jpg"),
  "SPair-71k": _spair,
  "cub/ann.json": _cub_annotations,
  "models/cub": _cub_model,
}


# -- running ----------------------------------------------------------------------------------------------------


def quick_commands_by_block() -> list[tuple[str, str]]:
  """(block title, command line) for every quick command, in README order."""
  text = README.read_text()
  out = []
  for block in quick_blocks(text):
    start = text.index(block)
    title = re.findall(r"^## (.+)$", text[:start], re.M)[-1]
    out.extend((title, shlex.join(argv)) for argv in commands(block))
  return out


def tiny_entry(line: str) -> Tiny | None:
  matches = [t for t in TINY if re.search(t.pattern, line)]
  assert len(matches) <= 1, f"{line!r} matches several TINY entries: {[t.pattern for t in matches]}"
  return matches[0] if matches else None


def test_every_quick_command_has_a_tiny_mapping():
  missing = [f"block '{title}': {line}" for title, line in quick_commands_by_block() if tiny_entry(line) is None]
  assert not missing, (
    "README quick commands with no tiny settings in tests/readme_run_test.py TINY (add an entry):\n"
    + "\n".join(missing)
  )
  lines = [line for _, line in quick_commands_by_block()]
  unused = [t.pattern for t in TINY if not any(re.search(t.pattern, line) for line in lines)]
  assert not unused, f"TINY entries that match no README quick command (stale): {unused}"


def _run_main(argv: list[str], cwd: pathlib.Path) -> tuple[int, str]:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  proc = subprocess.run(
    [sys.executable, "-m", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=HANG_TIMEOUT
  )
  return proc.returncode, proc.stdout + proc.stderr


def _run_module(argv: list[str]) -> tuple[int, str]:
  """`python -m MODULE ARGS` in this process: runpy, as the interpreter runs -m, with sys.argv set."""
  out = io.StringIO()
  saved, root = sys.argv, logging.getLogger()
  handlers, level = list(root.handlers), root.level  # a CLI's logging.basicConfig must not outlive it
  sys.argv = [argv[0], *argv[1:]]
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), warnings.catch_warnings():
      # This process imported the module already (other tests, or the command before): runpy warns that it
      # runs a second copy as __main__, which is what it should do here.
      warnings.filterwarnings("ignore", "'jaxgeal.* found in sys.modules", RuntimeWarning)
      runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    code = 0
  except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  finally:
    sys.argv = saved
    root.handlers[:], root.level = handlers, level
  return code, out.getvalue()


def _make_inputs(tiny: Tiny, where: str, unavailable: dict[str, str]) -> list[str]:
  """Makes the inputs the user would have; returns the reasons why some cannot exist (absent fixtures)."""
  reasons = []
  for name in tiny.inputs:
    if name in unavailable:
      reasons.append(f"{name}: {unavailable[name]}")
    elif not pathlib.Path(name).exists() and name != "DATASET_PRINTED_ABOVE":
      assert name in INPUTS, f"{where}: reads {name}, which no earlier command wrote and INPUTS does not make"
      reason = INPUTS[name](pathlib.Path(name))
      if reason:
        unavailable[name] = reason
        reasons.append(f"{name}: {reason}")
  return reasons


@pytest.mark.slow
def test_quick_blocks_run_in_order_on_tiny_settings(tmp_path, monkeypatch):
  work = tmp_path / "clone"
  work.mkdir()
  (work / "configs").symlink_to(REPO / "configs")
  monkeypatch.chdir(work)
  unavailable, skipped, seconds, printed = {}, [], {}, None
  for title, line in quick_commands_by_block():
    tiny = tiny_entry(line)
    assert tiny is not None, f"block '{title}': no TINY entry for {line!r}"
    if tiny.skip:
      continue
    where = f"block '{title}', command {line!r}"
    reasons = _make_inputs(tiny, where, unavailable)
    if reasons:  # What it writes is unavailable in turn, to the commands that read it.
      skipped.append(f"{line} ({'; '.join(reasons)})")
      for out in tiny.outputs:
        unavailable.update({str(p): f"{line!r} was skipped" for p in (pathlib.Path(out), *pathlib.Path(out).parents)})
      continue
    for old, new in tiny.replace:
      assert old in line, f"{where}: the TINY replacement {old!r} no longer applies"
      line = line.replace(old, new)
    if "DATASET_PRINTED_ABOVE" in line:
      assert printed, f"{where}: no command before it printed a dataset path"
      line = line.replace("DATASET_PRINTED_ABOVE", shlex.quote(printed))
    argv = [*shlex.split(line), *tiny.append]
    assert argv[:2] == ["python", "-m"], f"{where}: not a `python -m` command"
    start = time.monotonic()
    code, output = _run_main(argv[2:], work) if argv[2] == "jaxgeal.main" else _run_module(argv[2:])
    seconds[line] = time.monotonic() - start
    assert code == 0, f"{where} exited {code}:\n{output[-3000:]}"
    for out in tiny.outputs:
      assert (work / out).exists(), f"{where}: {out} was not written\n{output[-2000:]}"
    # `prepare` starts each dataset's summary line with the dataset's path; the next command may read it.
    printed = ([None] + re.findall(r"^(\S+/1\.0\.0): ", output, re.M))[-1] or printed
  print("\n".join(f"{t:6.1f} s  {line}" for line, t in seconds.items()))  # shown with -s or on failure
  print("skipped:\n" + "\n".join(skipped) if skipped else "nothing skipped")
  assert seconds, "no README command ran"
  if fixtures.fixture_root().is_dir():  # With the fixtures every command runs: none may be skipped quietly.
    assert not skipped, f"skipped although {fixtures.fixture_root()} exists: {skipped}"
