"""Every config file and every variant it declares (the names an unknown variant's UnknownVariantError lists),
loaded as `--config` does (jaxgeal.trainers.config_variants.load_config), for tests that must hold for all."""

import pathlib

from jaxgeal.trainers import config_variants

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted((REPO / "configs").glob("*.py"))


def load(path: pathlib.Path, arg=None):
  return config_variants.load_config(f"{path}:{arg}" if arg else path)


def variants(path: pathlib.Path) -> list:
  """[None, *declared variant names] of a config file."""
  try:
    load(path, "\0 no such variant")
  except config_variants.UnknownVariantError as e:
    return [None, *e.known]
  raise AssertionError(f"{path.name} accepted an unknown variant name")


def all_configs() -> list[tuple[str, str | None]]:
  """(file name, variant) for every config file and variant; ids like 'cats.py:tiny'."""
  return [(p.name, v) for p in CONFIG_FILES for v in variants(p)]
