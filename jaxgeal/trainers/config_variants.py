"""Config files and their variants: the one way configs/*.py are loaded and their `:<arg>` is applied.

`--config=configs/X.py:<variant>` calls the file's `get_config("<variant>")`, which applies a named override
(e.g. `tiny`, the CPU-sized version of a paper config) with `apply_variant`. Outside `--config` (tests,
benchmarks, a config that builds on another) `load_config("configs/X.py:<variant>")` does the same, and
`load_module` is the one loader of a config file by path: config_flags loads files by path too, so `configs/`
need not be importable as a package.
"""

import importlib.util
import os
import pathlib
import types
from collections.abc import Callable, Mapping

import ml_collections


class UnknownVariantError(ValueError):
  """`configs/X.py:<name>` with a name the file does not declare; `known` lists the names it does."""

  def __init__(self, message: str, known=()):
    super().__init__(message)
    self.known = sorted(known)

  @classmethod
  def of(cls, name: str, known) -> "UnknownVariantError":
    return cls(f"unknown config variant {name!r}; known: {sorted(known)}", known)


Variant = Callable[[ml_collections.ConfigDict], ml_collections.ConfigDict]


def apply_variant(
  c: ml_collections.ConfigDict, arg: str | None, variants: Mapping[str, Variant]
) -> ml_collections.ConfigDict:
  """`variants[arg](c)`; None or '' returns the config itself; an unknown name is an error naming the known."""
  if not arg:
    return c
  if arg not in variants:
    raise UnknownVariantError.of(arg, variants)
  return variants[arg](c)


def load_module(path: str | os.PathLike) -> types.ModuleType:
  """The Python file at `path` as a fresh module (not registered in sys.modules)."""
  path = pathlib.Path(path)
  spec = importlib.util.spec_from_file_location(f"config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def sibling(config_file: str | os.PathLike, name: str) -> types.ModuleType:
  """configs/<name>.py loaded from the config file `config_file` (its `__file__`), e.g. horses.py reading cars.py."""
  return load_module(pathlib.Path(config_file).with_name(f"{name}.py"))


def load_config(spec: str | os.PathLike) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the file `spec` names, as `--config=<spec>` does: "configs/cats.py:tiny" applies the
  variant `tiny`, "configs/cats.py" none; a relative path is relative to the working directory."""
  path, *arg = str(spec).split(":", 1)
  return load_module(path).get_config(*arg)
