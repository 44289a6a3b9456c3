"""Convert rosinality / GANgealing StyleGAN2 checkpoints (`g_ema`, `g`, `d`) to jaxgeal params + model config.

The architecture (size, style_dim, n_mlp, per-resolution channels) is read from the tensors' shapes, so any
rosinality-layout checkpoint converts, including narrowed or non-config-F ones. GANgealing's generator copy has
the same keys (its `num_fp16_res` normalisation only rescales per output channel and is cancelled by
demodulation in fp32, so it needs no parameter).
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from jaxgeal.convert import state_dict as sdc
from jaxgeal.models import stylegan2


def generator_config(sd: Mapping[str, np.ndarray]) -> dict:
  """Constructor arguments of `stylegan2.Generator` read from a state dict's shapes."""
  r = sdc.StateDictReader(sd, "StyleGAN2 generator")
  n_mlp = 0
  while r.has(f"style.{n_mlp + 1}.weight"):
    n_mlp += 1
  if n_mlp == 0:
    raise sdc.ConversionError("StyleGAN2 generator: no mapping layers `style.1.weight` found; is this a "
                              "rosinality generator state dict (g_ema)?")
  style_dim = int(r.sd["style.1.weight"].shape[1])
  n_rgb = sdc.count_indexed(r, "to_rgbs")
  size = 2 ** (n_rgb + 2)
  channels = [(4, int(r.take("input.input").shape[1]))]
  for j in range(n_rgb):
    channels.append((2 ** (j + 3), int(r.take(f"convs.{2 * j}.conv.weight").shape[1])))
  return {"size": size, "style_dim": style_dim, "n_mlp": n_mlp, "channels": channels,
          "lr_mlp": 0.01, "blur_kernel": [1, 3, 3, 1]}


def convert_generator(sd: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
  """Returns (config, variables) with variables = {'params': ..., 'noises': ...}."""
  config = generator_config(sd)
  r = sdc.StateDictReader(sd, "StyleGAN2 generator")
  params = {f"style_{i}": sdc.equal_linear(r, f"style.{i}") for i in range(1, config["n_mlp"] + 1)}
  params["input"] = sdc.nchw(r.take("input.input", 4))
  params["conv1"] = sdc.styled_conv(r, "conv1")
  params["to_rgb1"] = sdc.to_rgb(r, "to_rgb1")
  n_rgb = len(config["channels"]) - 1
  for i in range(2 * n_rgb):
    params[f"convs_{i}"] = sdc.styled_conv(r, f"convs.{i}")
  for j in range(n_rgb):
    params[f"to_rgbs_{j}"] = sdc.to_rgb(r, f"to_rgbs.{j}")
  noises = {}
  for i, res in enumerate(stylegan2.noise_resolutions(config["size"])):
    key = f"noises.noise_{i}"
    # Checkpoints saved without the buffers (rare) get fresh ones at load time instead.
    if r.has(key):
      noises[f"noise_{i}"] = sdc.nchw(r.take(key, 4))
      if noises[f"noise_{i}"].shape != (1, res, res, 1):
        raise sdc.ConversionError(f"StyleGAN2 generator: {key} has shape {r.sd[key].shape}, expected "
                                  f"(1, 1, {res}, {res})")
  r.check_all_used()
  return config, {"params": params, "noises": noises}


def discriminator_config(sd: Mapping[str, np.ndarray]) -> dict:
  r = sdc.StateDictReader(sd, "StyleGAN2 discriminator")
  if not r.has("convs.0.0.weight") or not r.has("final_linear.1.weight"):
    raise sdc.ConversionError("StyleGAN2 discriminator: missing `convs.0.0.weight` / `final_linear.1.weight`; "
                              "is this a rosinality discriminator state dict (d)?")
  n_blocks = sdc.count_indexed(r, "convs") - 1
  size = 2 ** (n_blocks + 2)
  channels = [(size, int(r.sd["convs.0.0.weight"].shape[0]))]
  for j in range(1, n_blocks + 1):
    channels.append((size // 2 ** j, int(r.sd[f"convs.{j}.conv2.1.weight"].shape[0])))
  c4 = int(r.sd["final_conv.0.weight"].shape[0])
  stddev_feat = int(r.sd["final_conv.0.weight"].shape[1]) - channels[-1][1]
  return {"size": size, "channels": sorted(channels), "stddev_feat": stddev_feat, "c4": c4,
          "blur_kernel": [1, 3, 3, 1]}


def convert_discriminator(sd: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
  config = discriminator_config(sd)
  c4 = config.pop("c4")
  if dict(config["channels"])[4] != c4:
    raise sdc.ConversionError("StyleGAN2 discriminator: final_conv width differs from the 4x4 block width")
  r = sdc.StateDictReader(sd, "StyleGAN2 discriminator")
  params = {"convs_0": sdc.conv_layer(r, "convs.0")}
  n_blocks = int(math.log2(config["size"])) - 2
  for j in range(1, n_blocks + 1):
    params[f"convs_{j}"] = sdc.res_block(r, f"convs.{j}")
  params["final_conv"] = sdc.conv_layer(r, "final_conv")
  lin0 = sdc.equal_linear(r, "final_linear.0")
  lin0["weight"] = sdc.dense_from_chw(r.take("final_linear.0.weight"), c4, 4, 4)
  params["final_linear_0"] = lin0
  params["final_linear_1"] = sdc.equal_linear(r, "final_linear.1")
  r.check_all_used()
  return config, {"params": params}


def build_generator(config: Mapping, **overrides) -> stylegan2.Generator:
  kw = dict(size=config["size"], style_dim=config["style_dim"], n_mlp=config["n_mlp"],
            channels=tuple(tuple(c) for c in config["channels"]), lr_mlp=config.get("lr_mlp", 0.01),
            blur_kernel=tuple(config.get("blur_kernel", (1, 3, 3, 1))))
  kw.update(overrides)
  return stylegan2.Generator(**kw)


def build_discriminator(config: Mapping, **overrides) -> stylegan2.Discriminator:
  kw = dict(size=config["size"], channels=tuple(tuple(c) for c in config["channels"]),
            stddev_feat=config.get("stddev_feat", 1), blur_kernel=tuple(config.get("blur_kernel", (1, 3, 3, 1))))
  kw.update(overrides)
  return stylegan2.Discriminator(**kw)


def convert_checkpoint(ckpt: Mapping) -> dict:
  """A loaded rosinality/GANgealing checkpoint -> {name: (kind, config, variables)} for g_ema, g and d.

  Accepts a training checkpoint ({'g', 'd', 'g_ema', ...}), a GANgealing checkpoint (only g_ema is used here)
  or a bare generator state dict.
  """
  if "style.1.weight" in ckpt:
    return {"g_ema": ("generator",) + convert_generator(ckpt)}
  out = {}
  for name in ("g_ema", "g"):
    if name in ckpt:
      out[name] = ("generator",) + convert_generator(ckpt[name])
  if "d" in ckpt:
    out["d"] = ("discriminator",) + convert_discriminator(ckpt["d"])
  if not out:
    keys = sorted(ckpt)[:10] if isinstance(ckpt, Mapping) else type(ckpt).__name__
    raise sdc.ConversionError(f"no StyleGAN2 weights found: expected keys 'g_ema', 'g' or 'd' "
                              f"(or a bare generator state dict); found {keys}")
  return out
