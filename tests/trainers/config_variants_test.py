"""jaxgeal.trainers.config_variants: `load_config("path:variant")` reads a config file as `--config` does, a
config builds on its siblings from any working directory, and an unknown variant names the known ones."""

import pytest

from jaxgeal.trainers import config_variants
from tests import configs

CATS = configs.REPO / "configs" / "cats.py"


def test_the_spec_after_the_colon_is_the_variant(monkeypatch):
  monkeypatch.chdir(configs.REPO)
  tiny = config_variants.load_config("configs/cats.py:tiny")  # relative to the working directory
  paper = config_variants.load_config("configs/cats.py")
  assert tiny.generator.checkpoint is None and paper.generator.checkpoint == "pretrained/cats_generator"
  assert config_variants.load_config("configs/cats.py:").to_dict() == paper.to_dict()


def test_a_config_reads_its_siblings_from_any_working_directory(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  c = config_variants.load_config(f"{configs.REPO / 'configs' / 'horses_classifier.py'}:tiny")
  assert c.trainer == "cluster_classifier" and c.total_steps == 6


def test_an_unknown_variant_lists_the_known():
  with pytest.raises(config_variants.UnknownVariantError, match=r"unknown config variant 'huge'") as e:
    config_variants.load_config(f"{configs.REPO / 'configs' / 'demo.py'}:huge")
  assert e.value.known == ["bimodal", "closeup", "complex", "lopsided", "tiny", "train_gan"]
