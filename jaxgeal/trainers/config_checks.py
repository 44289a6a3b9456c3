"""Config validation: every number, choice and divisibility rule of the trainers' configs, checked once before a
run starts (`jaxgeal.main.run`), so that a bad value is one line naming the field and what it may be instead of
a run that trains nothing, a traceback from inside a jitted step or a NaN hours later.

`validate(config)` dispatches on config.trainer; the demo's config holds a StyleGAN2 and a GANgealing config
and each is checked by its trainer's rules. Fields a config does not have are skipped (older configs, variants).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import ml_collections

from jaxgeal.ops.warp import PADDING_MODES
from jaxgeal.schedules import ANNEAL_FNS

# The discriminator's minibatch-stddev group (jaxgeal.models.stylegan2.Discriminator.stddev_group).
STDDEV_GROUP = 4
PERCEPTUAL_KINDS = ("vgg_ssl", "lpips", "mse", "lcn")
STN_TRANSFORMS = ("similarity", "flow")
DTYPES = ("float32", "bfloat16")  # the computation dtypes of config.dtype
_MISSING = object()


class ConfigError(ValueError):
  """A config value outside its allowed range; the message names the field, the value and the range."""


Rule = tuple[Callable[[Any], bool], str]


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


POSITIVE_INT: Rule = (lambda v: _is_int(v) and v > 0, "must be a positive integer")
NON_NEGATIVE_INT: Rule = (lambda v: _is_int(v) and v >= 0, "must be an integer >= 0")
OPTIONAL_POSITIVE_INT: Rule = (lambda v: v is None or (_is_int(v) and v > 0), "must be None or a positive integer")
POSITIVE: Rule = (lambda v: _is_number(v) and v > 0, "must be a positive number")
NON_NEGATIVE: Rule = (lambda v: _is_number(v) and v >= 0, "must be a number >= 0")
PROBABILITY: Rule = (lambda v: _is_number(v) and 0 <= v <= 1, "must be a number in [0, 1]")
BETA: Rule = (lambda v: _is_number(v) and 0 <= v < 1, "must be a number in [0, 1)")
DECAY: Rule = (lambda v: _is_number(v) and 0 < v <= 1, "must be a number in (0, 1]")
BOOL: Rule = (lambda v: isinstance(v, bool), "must be True or False")


def one_of(choices) -> Rule:
  return (lambda v: v in choices, f"must be one of {list(choices)}")


def subset_of(choices) -> Rule:
  return (
    lambda v: isinstance(v, (tuple, list)) and len(v) > 0 and all(t in choices for t in v),
    f"must be a non-empty sequence of {list(choices)}",
  )


_COMMON = [
  ("seed", NON_NEGATIVE_INT),
  ("batch_size", POSITIVE_INT),
  ("total_steps", POSITIVE_INT),
  ("log_every", POSITIVE_INT),
  ("ckpt_every", POSITIVE_INT),
  ("vis_every", NON_NEGATIVE_INT),
  ("keep_checkpoints", POSITIVE_INT),
  ("n_vis", POSITIVE_INT),
  ("num_devices", OPTIONAL_POSITIVE_INT),
  ("dtype", one_of(DTYPES)),
  ("mesh.fsdp", POSITIVE_INT),
  ("mesh.min_shard_size", NON_NEGATIVE_INT),
]

_GANGEALING = _COMMON + [
  ("micro_batch_size", POSITIVE_INT),
  ("real_size", POSITIVE_INT),
  ("ema_decay", PROBABILITY),
  ("generator.size", POSITIVE_INT),
  ("generator.style_dim", POSITIVE_INT),
  ("generator.n_mlp", POSITIVE_INT),
  ("generator.channel_multiplier", POSITIVE),
  ("perceptual.kind", one_of(PERCEPTUAL_KINDS)),
  ("perceptual.lcn_sigma", POSITIVE),
  ("perceptual.lcn_scales", POSITIVE_INT),
  ("stn.transform", subset_of(STN_TRANSFORMS)),
  ("stn.flow_size", POSITIVE_INT),
  ("stn.channel_multiplier", POSITIVE),
  ("stn.num_heads", POSITIVE_INT),
  ("stn.padding_mode", one_of(PADDING_MODES)),
  ("ll.ndirs", POSITIVE_INT),
  ("ll.inject", POSITIVE_INT),
  ("ll.pca_samples", POSITIVE_INT),
  ("ll.pca_batch", POSITIVE_INT),
  ("ll.kmeans_samples", POSITIVE_INT),
  ("loss.tv_weight", NON_NEGATIVE),
  ("loss.flow_identity_weight", NON_NEGATIVE),
  ("loss.equivariance_weight", NON_NEGATIVE),
  ("loss.equivariance_rotation", NON_NEGATIVE),
  ("loss.equivariance_log_scale", NON_NEGATIVE),
  ("loss.equivariance_shift", NON_NEGATIVE),
  ("optim.stn_lr", NON_NEGATIVE),
  ("optim.ll_lr", NON_NEGATIVE),
  ("optim.b1", BETA),
  ("optim.b2", BETA),
  ("optim.eps", POSITIVE),
  ("optim.anneal_psi", NON_NEGATIVE_INT),
  ("optim.anneal_fn", one_of(ANNEAL_FNS)),
  ("optim.period", POSITIVE_INT),
  ("optim.decay", DECAY),
  ("optim.t_mult", POSITIVE_INT),
  ("test.padding_mode", one_of(PADDING_MODES)),
  ("test.iters", POSITIVE_INT),
]

_CLUSTER_CLASSIFIER = _GANGEALING + [("optim.cls_lr", NON_NEGATIVE)]

_STYLEGAN2 = _COMMON + [
  ("model.size", POSITIVE_INT),
  ("model.style_dim", POSITIVE_INT),
  ("model.n_mlp", POSITIVE_INT),
  ("model.channel_multiplier", POSITIVE),
  ("model.lr_mlp", POSITIVE),
  ("data.size", POSITIVE_INT),
  ("optim.lr", NON_NEGATIVE),
  ("optim.r1", NON_NEGATIVE),
  ("optim.path_regularize", NON_NEGATIVE),
  ("optim.path_batch_shrink", POSITIVE_INT),
  ("optim.d_reg_every", POSITIVE_INT),
  ("optim.g_reg_every", POSITIVE_INT),
  ("optim.mixing", PROBABILITY),
]

_SWAPAE = [(k, r) for k, r in _COMMON if k != "total_steps"] + [
  ("total_images", POSITIVE_INT),
  ("group_size", POSITIVE_INT),
  ("micro_batch_size", POSITIVE_INT),
  ("model.crop_size", POSITIVE_INT),
  ("model.spatial_code_ch", POSITIVE_INT),
  ("model.global_code_ch", POSITIVE_INT),
  ("model.netE_num_downsampling_sp", POSITIVE_INT),
  ("model.netE_num_downsampling_gl", NON_NEGATIVE_INT),
  ("model.netE_scale_capacity", POSITIVE),
  ("model.netG_scale_capacity", POSITIVE),
  ("model.netG_num_base_resnet_layers", POSITIVE_INT),
  ("model.netD_scale_capacity", POSITIVE),
  ("model.netPatchD_scale_capacity", POSITIVE),
  ("model.netPatchD_max_nc", POSITIVE_INT),
  ("model.patch_size", POSITIVE_INT),
  ("loss.lambda_L1", NON_NEGATIVE),
  ("loss.lambda_GAN", NON_NEGATIVE),
  ("loss.lambda_PatchGAN", NON_NEGATIVE),
  ("loss.lambda_R1", NON_NEGATIVE),
  ("loss.lambda_patch_R1", NON_NEGATIVE),
  ("loss.patch_min_scale", POSITIVE),
  ("loss.patch_max_scale", POSITIVE),
  ("loss.patch_num_crops", POSITIVE_INT),
  ("optim.lr", NON_NEGATIVE),
  ("optim.beta1", BETA),
  ("optim.beta2", BETA),
  ("optim.R1_once_every", POSITIVE_INT),
]

_DEMO = [
  ("n_vis", POSITIVE_INT),
  ("data.size", POSITIVE_INT),
  ("data.seed", NON_NEGATIVE_INT),
  ("data.num_train", POSITIVE_INT),
  ("data.heldout_seed", NON_NEGATIVE_INT),
  ("data.num_heldout", POSITIVE_INT),
  ("data.num_pairs", POSITIVE_INT),
  ("data.render.mirror_prob", PROBABILITY),
  ("data.render.closeup_prob", PROBABILITY),
  ("data.render.clockwise_prob", PROBABILITY),
  ("data.render.deformation", NON_NEGATIVE),
  ("data.render.max_clutter", NON_NEGATIVE_INT),
  ("data.render.background_noise", BOOL),
  ("data.render.fur_texture", BOOL),
  ("data.render.max_rotation", NON_NEGATIVE),
]


def _get(config, path: str):
  node = config
  for key in path.split("."):
    if not isinstance(node, (ml_collections.ConfigDict, dict)) or key not in node:
      return _MISSING
    node = node[key]
  return node


def _check_fields(config, rules, prefix: str):
  for path, (ok, allowed) in rules:
    value = _get(config, path)
    if value is not _MISSING and not ok(value):
      raise ConfigError(f"{prefix}.{path}={value!r}: {allowed}")


def _check_devices(config, prefix: str, available: int) -> int:
  n = config.get("num_devices")
  if n is not None and n > available:
    raise ConfigError(
      f"{prefix}.num_devices={n}: must be at most the {available} available devices "
      "(on CPU set jax_num_cpu_devices before JAX starts)"
    )
  import jax  # pylint: disable=import-outside-toplevel

  processes = jax.process_count()
  if processes > 1 and n not in (None, available):
    # A mesh over some of the devices would leave processes without a slice of the batch.
    raise ConfigError(
      f"{prefix}.num_devices={n}: a run of {processes} processes uses all {available} devices; leave it unset"
    )
  n = available if n is None else n
  fsdp = _get(config, "mesh.fsdp")
  if fsdp is not _MISSING and n % fsdp:
    raise ConfigError(f"{prefix}.mesh.fsdp={fsdp}: must divide the number of devices ({n})")
  return n


def _check_divisible(prefix: str, field: str, value: int, by: int, what: str):
  if value % by:
    raise ConfigError(f"{prefix}.{field}={value}: must be a multiple of {what} ({by})")


def _gangealing(config, prefix: str, available: int):
  _check_fields(config, _GANGEALING, prefix)
  devices = _check_devices(config, prefix, available)
  micro = config.get("micro_batch_size", config.batch_size)
  _check_divisible(prefix, "batch_size", config.batch_size, micro, f"{prefix}.micro_batch_size")
  _check_divisible(prefix, "micro_batch_size", micro, devices, "the number of devices")
  if config.batch_size < 40 and config.total_steps > 10_000:
    logging.warning(
      "%s.batch_size=%d < 40: GANgealing is known to collapse with small batches (upstream issue "
      "#10); use micro_batch_size to accumulate gradients instead",
      prefix,
      config.batch_size,
    )


def _cluster_classifier(config, prefix: str, available: int):
  _check_fields(config, _CLUSTER_CLASSIFIER, prefix)
  devices = _check_devices(config, prefix, available)
  _check_divisible(prefix, "batch_size", config.batch_size, devices, "the number of devices")


def _stylegan2(config, prefix: str, available: int):
  _check_fields(config, _STYLEGAN2, prefix)
  devices = _check_devices(config, prefix, available)
  _check_divisible(prefix, "batch_size", config.batch_size, devices, "the number of devices")
  if config.batch_size > STDDEV_GROUP:
    _check_divisible(
      prefix,
      "batch_size",
      config.batch_size,
      STDDEV_GROUP,
      "the discriminator's minibatch-stddev group, or at most that",
    )
  size = config.model.size
  if size < 4 or size & (size - 1):
    raise ConfigError(f"{prefix}.model.size={size}: must be a power of two >= 4")


def _swapae(config, prefix: str, available: int):
  _check_fields(config, _SWAPAE, prefix)
  devices = _check_devices(config, prefix, available)
  _check_divisible(prefix, "batch_size", config.batch_size, devices, "the number of devices")
  _check_divisible(prefix, "batch_size", config.batch_size, config.micro_batch_size, f"{prefix}.micro_batch_size")
  _check_divisible(prefix, "micro_batch_size", config.micro_batch_size, config.group_size, f"{prefix}.group_size")
  _check_divisible(prefix, "group_size", config.group_size, 2, "2: swap pairs form within groups")
  m = config.model
  size = m.crop_size
  if size < 4 or size & (size - 1):
    raise ConfigError(f"{prefix}.model.crop_size={size}: must be a power of two >= 4 (the discriminator's)")
  n = size // 2**m.netE_num_downsampling_sp  # the structure code's side; then unpadded stride-2 3x3 convs
  for _ in range(m.netE_num_downsampling_gl):
    if n < 3:
      raise ConfigError(
        f"{prefix}.model.crop_size={size}: too small for the encoder's {m.netE_num_downsampling_sp} + "
        f"{m.netE_num_downsampling_gl} down-samplings (netE_num_downsampling_sp / _gl)"
      )
    n = (n - 3) // 2 + 1
  if m.patch_size > size:
    raise ConfigError(f"{prefix}.model.patch_size={m.patch_size}: must be at most model.crop_size ({size})")
  if not 0 < config.loss.patch_min_scale <= config.loss.patch_max_scale <= 1:
    raise ConfigError(
      f"{prefix}.loss.patch_min_scale={config.loss.patch_min_scale}, patch_max_scale="
      f"{config.loss.patch_max_scale}: must satisfy 0 < min <= max <= 1"
    )
  if config.data.size != size:
    raise ConfigError(f"{prefix}.data.size={config.data.size}: must equal model.crop_size ({size})")


def _demo(config, prefix: str, available: int):
  _check_fields(config, _DEMO, prefix)
  _stylegan2(config.stylegan2, f"{prefix}.stylegan2", available)
  _gangealing(config.gangealing, f"{prefix}.gangealing", available)


_SWAPAE_DEMO = [
  ("detector.seed", NON_NEGATIVE_INT),
  ("detector.num_images", (lambda v: _is_int(v) and v >= 2, "must be an integer >= 2")),
  ("detector.steps", POSITIVE_INT),
]


def _swapae_demo(config, prefix: str, available: int):
  _check_fields(config, _DEMO, prefix)
  _check_fields(config, _SWAPAE_DEMO, prefix)
  _swapae(config.swapae, f"{prefix}.swapae", available)
  if config.swapae.model.crop_size != config.data.size:
    raise ConfigError(
      f"{prefix}.data.size={config.data.size}: must equal swapae.model.crop_size ({config.swapae.model.crop_size})"
    )


TRAINER_RULES = {
  "gangealing": _gangealing,
  "cluster_classifier": _cluster_classifier,
  "stylegan2": _stylegan2,
  "demo": _demo,
  "swapae": _swapae,
  "swapae_demo": _swapae_demo,
}


def validate(config: ml_collections.ConfigDict, available_devices: int | None = None):
  """Raise ConfigError naming the first field outside its range (message: `config.<field>=<value>: <range>`).

  available_devices: how many devices a run could use (default: all JAX devices), for num_devices and the
  batch's divisibility.
  """
  name = config.get("trainer", "gangealing")
  if name not in TRAINER_RULES:
    raise ConfigError(f"config.trainer={name!r}: must be one of {sorted(TRAINER_RULES)}")
  if available_devices is None:
    import jax

    available_devices = jax.device_count()
  TRAINER_RULES[name](config, "config", available_devices)
