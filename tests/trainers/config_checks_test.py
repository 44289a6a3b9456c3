"""jaxgeal.trainers.config_checks: every shipped config and variant is valid, and each kind of bad value is
refused with one message naming the field, its value and what it may be."""

import logging

import pytest

from jaxgeal.trainers import config_checks
from tests import configs

ALL = configs.all_configs()


def _cfg(name, arg="tiny"):
  return configs.load(configs.REPO / "configs" / name, arg)


@pytest.mark.parametrize("name,arg", ALL, ids=[f"{n}:{a}" if a else n for n, a in ALL])
def test_every_config_and_variant_is_valid(name, arg):
  config_checks.validate(_cfg(name, arg), available_devices=1)


def test_the_variant_list_is_complete():
  assert {
    ("cats.py", "tiny"),
    ("demo.py", "train_gan"),
    ("demo.py", "lopsided"),
    ("cars_classifier.py", "tiny"),
    ("stylegan2_64.py", "tiny"),
  } <= set(ALL)


@pytest.mark.parametrize(
  "name,field,value,message",
  [
    ("cats.py", "batch_size", -2, "config.batch_size=-2: must be a positive integer"),
    ("cats.py", "batch_size", 0, "config.batch_size=0: must be a positive integer"),
    ("cats.py", "batch_size", True, "config.batch_size=True: must be a positive integer"),
    ("cats.py", "total_steps", 0, "config.total_steps=0: must be a positive integer"),
    ("cats.py", "log_every", -1, "config.log_every=-1: must be a positive integer"),
    ("cats.py", "vis_every", -5, "config.vis_every=-5: must be an integer >= 0"),
    ("cats.py", "optim.stn_lr", -1e-3, "config.optim.stn_lr=-0.001: must be a number >= 0"),
    ("cats.py", "optim.ll_lr", float("nan"), "config.optim.ll_lr=nan: must be a number >= 0"),
    ("cats.py", "optim.b2", 1.0, "config.optim.b2=1.0: must be a number in [0, 1)"),
    ("cats.py", "ema_decay", 1.5, "config.ema_decay=1.5: must be a number in [0, 1]"),
    ("cats.py", "loss.tv_weight", -1.0, "config.loss.tv_weight=-1.0: must be a number >= 0"),
    ("cats.py", "perceptual.kind", "vgg", "config.perceptual.kind='vgg': must be one of"),
    ("cats.py", "stn.padding_mode", "wrap", "config.stn.padding_mode='wrap': must be one of"),
    ("cats.py", "stn.transform", ("affine",), "config.stn.transform=('affine',): must be a non-empty sequence"),
    ("cats.py", "optim.anneal_fn", "step", "config.optim.anneal_fn='step': must be one of"),
    ("cats.py", "micro_batch_size", 3, "config.batch_size=4: must be a multiple of config.micro_batch_size (3)"),
    ("cats.py", "num_devices", 0, "config.num_devices=0: must be None or a positive integer"),
    ("cats.py", "num_devices", 2, "config.num_devices=2: must be at most the 1 available devices"),
    ("cats.py", "mesh.fsdp", 0, "config.mesh.fsdp=0: must be a positive integer"),
    ("stylegan2_256.py", "mesh.min_shard_size", -1, "config.mesh.min_shard_size=-1: must be an integer >= 0"),
    ("stylegan2_256.py", "mesh.fsdp", 2, "config.mesh.fsdp=2: must divide the number of devices (1)"),
    ("cars_classifier.py", "optim.cls_lr", -1.0, "config.optim.cls_lr=-1.0: must be a number >= 0"),
    ("stylegan2_256.py", "optim.mixing", 1.5, "config.optim.mixing=1.5: must be a number in [0, 1]"),
    ("stylegan2_256.py", "batch_size", 6, "config.batch_size=6: must be a multiple of the discriminator's"),
    ("stylegan2_256.py", "model.size", 24, "config.model.size=24: must be a power of two >= 4"),
    ("demo.py", "gangealing.batch_size", -1, "config.gangealing.batch_size=-1: must be a positive integer"),
    ("demo.py", "stylegan2.total_steps", 0, "config.stylegan2.total_steps=0: must be a positive integer"),
    ("demo.py", "data.render.mirror_prob", 2.0, "config.data.render.mirror_prob=2.0: must be a number in [0, 1]"),
    ("demo.py", "data.num_pairs", 0, "config.data.num_pairs=0: must be a positive integer"),
    ("swapae_demo.py", "detector.steps", 0, "config.detector.steps=0: must be a positive integer"),
    ("swapae_demo.py", "detector.num_images", 1, "config.detector.num_images=1: must be an integer >= 2"),
    ("swapae_demo.py", "detector.seed", -1, "config.detector.seed=-1: must be an integer >= 0"),
    ("demo.py", "data.render.background_noise", "no", "config.data.render.background_noise='no': must be True"),
    ("demo.py", "data.render.fur_texture", "no", "config.data.render.fur_texture='no': must be True"),
    ("cats.py", "dtype", "float16", "config.dtype='float16': must be one of ['float32', 'bfloat16']"),
    ("stylegan2_256.py", "dtype", "bf16", "config.dtype='bf16': must be one of ['float32', 'bfloat16']"),
    ("swapae_church.py", "dtype", "float64", "config.dtype='float64': must be one of ['float32', 'bfloat16']"),
    ("cars_classifier.py", "dtype", "half", "config.dtype='half': must be one of ['float32', 'bfloat16']"),
    ("demo.py", "gangealing.dtype", "fp16", "config.gangealing.dtype='fp16': must be one of"),
  ],
)
def test_a_bad_value_names_the_field_and_the_allowed_range(name, field, value, message):
  c = _cfg(name)
  *parents, key = field.split(".")
  node = c
  for p in parents:
    node = node[p]
  node[key] = value
  with pytest.raises(config_checks.ConfigError) as e:
    config_checks.validate(c, available_devices=1)
  assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_the_batch_must_split_over_the_devices():
  c = _cfg("cats.py")  # tiny: batch 4 in micro-batches of 2
  config_checks.validate(c, available_devices=2)
  with pytest.raises(
    config_checks.ConfigError,
    match=r"config.micro_batch_size=2: must be a multiple of the "
    r"number of devices \(4\)",
  ):
    config_checks.validate(c, available_devices=4)
  c.num_devices = 2
  config_checks.validate(c, available_devices=4)
  s = _cfg("stylegan2_256.py")
  s.batch_size = 8
  with pytest.raises(config_checks.ConfigError, match=r"config.batch_size=8: .* number of devices \(3\)"):
    config_checks.validate(s, available_devices=3)


def test_fsdp_must_divide_the_devices_and_the_batch_splits_over_all_of_them():
  s = _cfg("stylegan2_256.py")  # tiny: batch 4
  s.mesh.fsdp = 2
  config_checks.validate(s, available_devices=4)  # a 2 x 2 (data x fsdp) mesh; 4 images over 4 devices
  with pytest.raises(config_checks.ConfigError, match=r"^config.mesh.fsdp=2: must divide the number of devices \(3\)$"):
    config_checks.validate(s, available_devices=3)
  s.mesh.fsdp = 8
  with pytest.raises(config_checks.ConfigError, match=r"^config.batch_size=4: .* number of devices \(8\)$"):
    config_checks.validate(s, available_devices=8)


def test_an_unknown_trainer_is_refused():
  c = _cfg("cats.py")
  c.trainer = "gan"
  with pytest.raises(config_checks.ConfigError, match=r"config.trainer='gan': must be one of"):
    config_checks.validate(c, available_devices=1)


def test_a_small_gangealing_batch_for_a_long_run_is_a_warning(caplog):
  c = _cfg("cats.py", None)
  c.update(batch_size=8, micro_batch_size=8)
  with caplog.at_level(logging.WARNING):
    config_checks.validate(c, available_devices=1)
  assert "config.batch_size=8 < 40" in caplog.text
