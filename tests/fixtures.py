"""Access to the upstream PyTorch reference fixtures (../shared/fixtures, README.md there).

Parity tests never hard-code a size or option: they collect every `<kind>.json` under the fixture root
recursively, and replay what the json records. The root comes from `$JAXGEAL_FIXTURES` (default
`../shared/fixtures` beside the repository); where it is absent (a user's clone) the tests skip cleanly.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib

import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def fixture_root() -> pathlib.Path:
  return pathlib.Path(os.environ.get("JAXGEAL_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))


class Fixture:
  """One `<kind>.json` + `<kind>.npz` pair; arrays are float32 in upstream (NCHW) layout."""

  def __init__(self, json_path: pathlib.Path, root: pathlib.Path):
    self.json_path = json_path
    self.dir = json_path.parent
    self.kind = json_path.stem
    self.id = str(json_path.with_suffix("").relative_to(root))
    self.meta = json.loads(json_path.read_text())

  @functools.cached_property
  def arrays(self) -> dict[str, np.ndarray]:
    with np.load(self.dir / f"{self.kind}.npz") as data:
      return {k: data[k] for k in data.files}

  def __getitem__(self, name: str) -> np.ndarray:
    return self.arrays[name]

  def __contains__(self, name: str) -> bool:
    return name in self.arrays

  def sequence(self, prefix: str) -> list[np.ndarray]:
    """Arrays named `<prefix>_0, <prefix>_1, ...` in order (the README's sequence convention)."""
    out = []
    while f"{prefix}_{len(out)}" in self.arrays:
      out.append(self.arrays[f"{prefix}_{len(out)}"])
    return out

  def resolve(self, filename: str) -> pathlib.Path:
    """A referenced file: in the fixture's own directory first, then in its parent."""
    for d in (self.dir, self.dir.parent):
      if (d / filename).exists():
        return d / filename
    raise FileNotFoundError(f"{filename} not found next to {self.json_path} nor in its parent")

  def checkpoint_file(self) -> str:
    """The one `.pt` file the json's `checkpoints` entry names (not the fixture kind: files may be shared)."""
    names = [n for n in self.meta.get("checkpoints", {}) if n.endswith((".pt", ".pth"))]
    if len(names) != 1:
      raise KeyError(f"{self.id}: expected one checkpoint file in the json, found {names}")
    return names[0]

  def call(self, output: str) -> dict:
    """The recorded call that produced `output`."""
    for c in self.meta.get("calls", []):
      if output in c.get("outputs", []):
        return c
    raise KeyError(f"{self.id}: no recorded call produces {output!r}")

  def __repr__(self):
    return f"Fixture({self.id})"


def collect(kind: str) -> list:
  """pytest params for every `<kind>.json` under the root, recursively, with ids like `multihead/stn`."""
  root = fixture_root()
  if not root.is_dir():
    return [
      pytest.param(None, id=f"{kind}-absent", marks=pytest.mark.skip(reason=f"fixture directory {root} is absent"))
    ]
  paths = sorted(root.rglob(f"{kind}.json"))
  if not paths:
    return [pytest.param(None, id=f"{kind}-none", marks=pytest.mark.skip(reason=f"no {kind}.json under {root}"))]
  return [pytest.param(Fixture(p, root), id=str(p.with_suffix("").relative_to(root))) for p in paths]


def assert_close(actual, expected, atol: float, name: str, rtol: float = 0.0):
  """max |actual - expected| <= atol + rtol * max|expected|, reporting the observed error."""
  actual = np.asarray(actual, np.float64)
  expected = np.asarray(expected, np.float64)
  assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != expected {expected.shape}"
  err = float(np.max(np.abs(actual - expected))) if actual.size else 0.0
  scale = float(np.max(np.abs(expected))) if expected.size else 0.0
  bound = atol + rtol * scale
  assert err <= bound, f"{name}: max abs error {err:.3e} > {bound:.3e} (max |expected| {scale:.3e})"
  return err


def nchw_to_nhwc(x):
  return np.transpose(np.asarray(x), (0, 2, 3, 1))


def call_kwargs(text: str) -> dict[str, float | int]:
  """Numeric `name=value` pairs of a recorded call string or note, e.g. 'truncation=0.7, inject_index=3'."""
  import re

  out = {}
  for name, value in re.findall(r"([A-Za-z_][A-Za-z_0-9]*)\s*=\s*(-?\d+(?:\.\d*)?(?:[eE]-?\d+)?)\b", text):
    out[name] = float(value) if any(c in value for c in ".eE") else int(value)
  return out


def load_checkpoint(fixture: Fixture, filename: str):
  """A fixture's .pt file, read with jaxgeal's own torch-free reader."""
  from jaxgeal.convert import torch_pickle

  return torch_pickle.load(fixture.resolve(filename))
