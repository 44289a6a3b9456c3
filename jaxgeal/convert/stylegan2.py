"""Convert rosinality / GANgealing StyleGAN2 checkpoints (`g_ema`, `g`, `d`) to jaxgeal params + model config.

The architecture (size, style_dim, n_mlp, per-resolution channels) is read from the tensors' shapes, so any
rosinality-layout checkpoint converts, including narrowed or non-config-F ones. GANgealing's generator copy has
the same keys (its `num_fp16_res` normalisation only rescales per output channel and is cancelled by
demodulation in fp32, so it needs no parameter).

`GENERATOR_KEYS` / `DISCRIMINATOR_KEYS` pair every key of rosinality's `model.py` state dicts
(rosinality/stylegan2-pytorch, model.py, commit bef283a1c24087da704d16c30abc8e36e63efa0e) with our parameter
path and layout; the converters below and the parity tests' gradient checks both go through them.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxgeal.convert import state_dict as sdc
from jaxgeal.models import stylegan2


def _generator_rules():
  """rosinality Generator: style.{i} EqualLinear; StyledConv = conv (ModulatedConv2d, with a `blur` buffer when
  upsampling) + noise + activate; ToRGB = conv + bias (+ `upsample` buffer); noises.noise_{i} buffers."""
  rules = [
    ("style.{i}.weight", "params/style_{i}/weight", sdc.DENSE),
    ("style.{i}.bias", "params/style_{i}/bias", sdc.VECTOR),
    ("input.input", "params/input", sdc.NCHW),
    ("noises.noise_{i}", "noises/noise_{i}", sdc.NCHW),
  ]

  def modulated(module):
    return [
      (f"{module}.conv.weight", "conv.weight", sdc.MODCONV),
      (f"{module}.conv.modulation.weight", "conv.modulation.weight", sdc.DENSE),
      (f"{module}.conv.modulation.bias", "conv.modulation.bias", sdc.VECTOR),
    ]

  for module in ("conv1", "convs.{i}"):
    rules += modulated(module) + [
      (f"{module}.noise.weight", "noise.weight", sdc.VECTOR),
      (f"{module}.activate.bias", "activate.bias", sdc.VECTOR),
    ]
  for module in ("to_rgb1", "to_rgbs.{i}"):
    rules += modulated(module) + [(f"{module}.bias", "bias", sdc.RGB_BIAS)]
  # Blur kernels of the upsampling convs (the even entries of `convs`) and of the ToRGB skip upsampling.
  rules += [("convs.{i}.conv.blur.kernel", None, sdc.BUFFER), ("to_rgbs.{i}.upsample.kernel", None, sdc.BUFFER)]
  return [_module_rule(key, sub, layout) for key, sub, layout in rules]


def _discriminator_rules():
  """rosinality Discriminator: ConvLayer is a Sequential ([Blur] when downsampling, EqualConv2d,
  FusedLeakyReLU); ResBlock = conv1 + conv2 (downsampling) + skip (downsampling, no bias, no activation)."""
  rules = [
    ("convs.0.0.weight", "params/convs_0/conv/weight", sdc.CONV),
    ("convs.0.1.bias", "params/convs_0/activate/bias", sdc.VECTOR),
    ("convs.{i}.conv1.0.weight", "params/convs_{i}/conv1/conv/weight", sdc.CONV),
    ("convs.{i}.conv1.1.bias", "params/convs_{i}/conv1/activate/bias", sdc.VECTOR),
    ("convs.{i}.conv2.0.kernel", None, sdc.BUFFER),
    ("convs.{i}.conv2.1.weight", "params/convs_{i}/conv2/conv/weight", sdc.CONV),
    ("convs.{i}.conv2.2.bias", "params/convs_{i}/conv2/activate/bias", sdc.VECTOR),
    ("convs.{i}.skip.0.kernel", None, sdc.BUFFER),
    ("convs.{i}.skip.1.weight", "params/convs_{i}/skip/conv/weight", sdc.CONV),
    ("final_conv.0.weight", "params/final_conv/conv/weight", sdc.CONV),
    ("final_conv.1.bias", "params/final_conv/activate/bias", sdc.VECTOR),
    ("final_linear.0.weight", "params/final_linear_0/weight", sdc.DENSE_CHW4),
    ("final_linear.0.bias", "params/final_linear_0/bias", sdc.VECTOR),
    ("final_linear.1.weight", "params/final_linear_1/weight", sdc.DENSE),
    ("final_linear.1.bias", "params/final_linear_1/bias", sdc.VECTOR),
  ]
  return rules


def _module_rule(key: str, sub: str | None, layout: sdc.Layout):
  """A rule whose path is the key's module (a list index `name.{i}` becomes `name_{i}`) + `sub`."""
  if sub is None or "/" in sub:
    return key, sub, layout
  module = key[: -len(sub) - 1]
  return key, "params/" + module.replace(".{i}", "_{i}") + "/" + sub.replace(".", "/"), layout


GENERATOR_KEYS = sdc.KeyMap("StyleGAN2 generator", _generator_rules())
DISCRIMINATOR_KEYS = sdc.KeyMap("StyleGAN2 discriminator", _discriminator_rules())


def generator_config(sd: Mapping[str, np.ndarray]) -> dict:
  """Constructor arguments of `stylegan2.Generator` read from a state dict's shapes."""
  r = sdc.StateDictReader(sd, "StyleGAN2 generator")
  n_mlp = 0
  while r.has(f"style.{n_mlp + 1}.weight"):
    n_mlp += 1
  if n_mlp == 0:
    raise sdc.ConversionError(
      "StyleGAN2 generator: no mapping layers `style.1.weight` found; is this a "
      "rosinality generator state dict (g_ema)?"
    )
  style_dim = int(r.sd["style.1.weight"].shape[1])
  n_rgb = sdc.count_indexed(r, "to_rgbs")
  size = 2 ** (n_rgb + 2)
  channels = [(4, int(r.take("input.input").shape[1]))]
  for j in range(n_rgb):
    channels.append((2 ** (j + 3), int(r.take(f"convs.{2 * j}.conv.weight").shape[1])))
  return {
    "size": size,
    "style_dim": style_dim,
    "n_mlp": n_mlp,
    "channels": channels,
    "lr_mlp": 0.01,
    "blur_kernel": [1, 3, 3, 1],
  }


def convert_generator(sd: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
  """Returns (config, variables) with variables = {'params': ..., 'noises': ...}."""
  config = generator_config(sd)
  G = stylegan2.generator_from_config(config)
  expected = jax.eval_shape(
    lambda: G.init(jax.random.PRNGKey(0), jnp.zeros((1, config["style_dim"])), randomize_noise=False)
  )
  r = sdc.StateDictReader(sd, "StyleGAN2 generator")
  # Checkpoints saved without the noise buffers (rare) get fresh ones at load time instead.
  variables = GENERATOR_KEYS.convert(r, expected, optional=lambda path: path[0] == "noises")
  variables.setdefault("noises", {})
  return config, variables


def discriminator_config(sd: Mapping[str, np.ndarray]) -> dict:
  r = sdc.StateDictReader(sd, "StyleGAN2 discriminator")
  if not r.has("convs.0.0.weight") or not r.has("final_linear.1.weight"):
    raise sdc.ConversionError(
      "StyleGAN2 discriminator: missing `convs.0.0.weight` / `final_linear.1.weight`; "
      "is this a rosinality discriminator state dict (d)?"
    )
  n_blocks = sdc.count_indexed(r, "convs") - 1
  size = 2 ** (n_blocks + 2)
  channels = [(size, int(r.sd["convs.0.0.weight"].shape[0]))]
  for j in range(1, n_blocks + 1):
    channels.append((size // 2**j, int(r.sd[f"convs.{j}.conv2.1.weight"].shape[0])))
  c4 = int(r.sd["final_conv.0.weight"].shape[0])
  stddev_feat = int(r.sd["final_conv.0.weight"].shape[1]) - channels[-1][1]
  return {"size": size, "channels": sorted(channels), "stddev_feat": stddev_feat, "c4": c4, "blur_kernel": [1, 3, 3, 1]}


def convert_discriminator(sd: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
  config = discriminator_config(sd)
  c4 = config.pop("c4")
  if dict(config["channels"])[4] != c4:
    raise sdc.ConversionError("StyleGAN2 discriminator: final_conv width differs from the 4x4 block width")
  D = stylegan2.discriminator_from_config(config)
  size = config["size"]
  expected = jax.eval_shape(lambda: D.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3))))
  variables = DISCRIMINATOR_KEYS.convert(sdc.StateDictReader(sd, "StyleGAN2 discriminator"), expected)
  return config, variables


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
    raise sdc.ConversionError(
      f"no StyleGAN2 weights found: expected keys 'g_ema', 'g' or 'd' (or a bare generator state dict); found {keys}"
    )
  return out
