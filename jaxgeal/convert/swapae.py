"""Convert Swapping Autoencoder checkpoints (taesungp/swapping-autoencoder-pytorch, commit
6baa180f1184ee79a6b967f9d80ee0e02a979ac7: `<N>k_checkpoint.pth` = `SwappingAutoencoderModel.state_dict()`, keys
`E.*`, `G.*`, `D.*`, `Dpatch.*` and the buffer `num_discriminator_iters`) to jaxgeal variables.

The architecture (every width, depth, code size, patch size, blur kernel) is read from the tensors' shapes, so
narrowed and paper-size checkpoints convert alike; test-time checkpoints without `D` / `Dpatch` give only the
encoder and generator. Upstream's options (`opt.txt` or `opt.pkl` beside the checkpoint) add what shapes cannot
say (`netG_use_noise`, the patch and loss options) where present. One `state_dict.KeyMap` per network pairs
every upstream key with our parameter path; the D and patch-D maps depend on the size (upstream names their
blocks by resolution).
"""

from __future__ import annotations

import argparse
import ast
import math
import pathlib
import pickle
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxgeal.convert import state_dict as sdc
from jaxgeal.models import swapae

KIND = "swapae"
NETWORKS = {"E": "encoder", "G": "generator", "D": "discriminator", "Dpatch": "patch_discriminator"}


def _conv_layer(key: str, path: str, *, act: bool = True, conv_bias: bool = False, blur: bool = False):
  """Upstream ConvLayer (a Sequential of [Blur | RefPad], Conv, [Act]) -> our ConvLayer (conv, activate)."""
  rules = [(f"{key}.Conv.weight", f"{path}/conv/weight", sdc.CONV)]
  if conv_bias:
    rules.append((f"{key}.Conv.bias", f"{path}/conv/bias", sdc.VECTOR))
  if act:
    rules.append((f"{key}.Act.bias", f"{path}/activate/bias", sdc.VECTOR))
  if blur:
    rules.append((f"{key}.Blur.kernel", None, sdc.BUFFER))
  return rules


def _res_block(key: str, path: str, downsample: bool = True):
  return (
    _conv_layer(f"{key}.conv1", f"{path}/conv1")
    + _conv_layer(f"{key}.conv2", f"{path}/conv2", blur=downsample)
    + _conv_layer(f"{key}.skip", f"{path}/skip", act=False, blur=downsample)
  )


def _styled_conv(key: str, path: str, upsample: bool = False):
  rules = [
    (f"{key}.conv.weight", f"{path}/conv/weight", sdc.MODCONV),
    (f"{key}.conv.modulation.weight", f"{path}/conv/modulation/weight", sdc.DENSE),
    (f"{key}.conv.modulation.bias", f"{path}/conv/modulation/bias", sdc.VECTOR),
    (f"{key}.noise.weight", f"{path}/noise/weight", sdc.VECTOR),
    (f"{key}.activate.bias", f"{path}/activate/bias", sdc.VECTOR),
  ]
  return rules + ([(f"{key}.conv.blur.kernel", None, sdc.BUFFER)] if upsample else [])


ENCODER_KEYS = sdc.KeyMap(
  "Swapping Autoencoder encoder (E)",
  _conv_layer("FromRGB", "params/FromRGB")
  + _res_block("DownToSpatialCode.ResBlockDownBy{i}", "params/ResBlockDownBy{i}")
  + _conv_layer("ToSpatialCode.0", "params/ToSpatialCode_0")
  + _conv_layer("ToSpatialCode.1", "params/ToSpatialCode_1", act=False, conv_bias=True)
  + _conv_layer("DownToGlobalCode.ConvLayerDownBy{i}", "params/ConvLayerDownBy{i}", blur=True)
  + [
    ("ToGlobalCode.0.weight", "params/ToGlobalCode/weight", sdc.DENSE),
    ("ToGlobalCode.0.bias", "params/ToGlobalCode/bias", sdc.VECTOR),
  ],
)

GENERATOR_KEYS = sdc.KeyMap(
  "Swapping Autoencoder generator (G)",
  [
    (
      f"SpatialCodeModulation.{a}.{b}",
      f"params/SpatialCodeModulation/{a}/{b}",
      sdc.DENSE if b == "weight" else sdc.VECTOR,
    )
    for a in ("scale", "bias")
    for b in ("weight", "bias")
  ]
  + _styled_conv("HeadResnetBlock{i}.conv1", "params/HeadResnetBlock{i}/conv1")
  + _styled_conv("HeadResnetBlock{i}.conv2", "params/HeadResnetBlock{i}/conv2")
  + _conv_layer("HeadResnetBlock{i}.skip", "params/HeadResnetBlock{i}/skip", act=False)
  + _styled_conv("UpsamplingResBlock{i}.conv1", "params/UpsamplingResBlock{i}/conv1", upsample=True)
  + _styled_conv("UpsamplingResBlock{i}.conv2", "params/UpsamplingResBlock{i}/conv2")
  + _conv_layer("UpsamplingResBlock{i}.skip", "params/UpsamplingResBlock{i}/skip")
  + [
    ("ToRGB.conv.weight", "params/ToRGB/conv/weight", sdc.MODCONV),
    ("ToRGB.conv.modulation.weight", "params/ToRGB/conv/modulation/weight", sdc.DENSE),
    ("ToRGB.conv.modulation.bias", "params/ToRGB/conv/modulation/bias", sdc.VECTOR),
    ("ToRGB.bias", "params/ToRGB/bias", sdc.RGB_BIAS),
    ("ToRGB.upsample.kernel", None, sdc.BUFFER),
  ],
)


def _d_block_name(i: int) -> str:
  """upstream Discriminator: the block reducing 2^i to 2^(i-1) is named str(9 - i), or '2^ix2^i' above 256."""
  return str(9 - i) if i <= 8 else f"{2**i}x{2**i}"


def _patch_block_name(i: int) -> str:
  return str(7 - i) if i <= 6 else f"{2**i}x{2**i}"


def discriminator_keys(size: int) -> sdc.KeyMap:
  """Keys of `D.stylegan2_D` (upstream's rosinality copy with named blocks and no minibatch stddev)."""
  log_size = int(round(math.log2(size)))
  rules = _conv_layer("convs.0", "params/convs_0")
  for j, i in enumerate(range(log_size, 2, -1), start=1):
    rules += _res_block(f"convs.{_d_block_name(i)}", f"params/convs_{j}")
  rules += _conv_layer("final_conv", "params/final_conv") + [
    ("final_linear.0.weight", "params/final_linear_0/weight", sdc.DENSE_CHW4),
    ("final_linear.0.bias", "params/final_linear_0/bias", sdc.VECTOR),
    ("final_linear.1.weight", "params/final_linear_1/weight", sdc.DENSE),
    ("final_linear.1.bias", "params/final_linear_1/bias", sdc.VECTOR),
  ]
  return sdc.KeyMap(f"Swapping Autoencoder discriminator (D, {size} px)", rules)


def patch_discriminator_keys(patch_size: int, n_pair: int = 4) -> sdc.KeyMap:
  log_size = int(math.ceil(math.log2(patch_size)))
  rules = _conv_layer("convs.0", "params/convs_0")
  j = 0
  for j, i in enumerate(range(log_size, 2, -1), start=1):
    rules += _res_block(f"convs.{_patch_block_name(i)}", f"params/convs_{j}")
  rules += _res_block("convs.5", f"params/convs_{j + 1}", downsample=False)
  rules += _conv_layer("convs.6", f"params/convs_{j + 2}")
  for k in range(n_pair):
    rules += [
      (f"pairlinear.{k}.weight", f"params/pairlinear_{k}/weight", sdc.DENSE),
      (f"pairlinear.{k}.bias", f"params/pairlinear_{k}/bias", sdc.VECTOR),
    ]
  return sdc.KeyMap(f"Swapping Autoencoder patch discriminator (Dpatch, {patch_size} px crops)", rules)


def keymaps(config: Mapping) -> dict[str, sdc.KeyMap]:
  return {
    "E": ENCODER_KEYS,
    "G": GENERATOR_KEYS,
    "D": discriminator_keys(config["discriminator"]["size"]) if config.get("discriminator") else None,
    "Dpatch": (
      patch_discriminator_keys(
        config["patch_discriminator"]["patch_size"], len(config["patch_discriminator"]["pair_widths"]) + 1
      )
      if config.get("patch_discriminator")
      else None
    ),
  }


# -- the architecture from shapes ---------------------------------------------------------------------------------


def _sub(sd: Mapping, prefix: str) -> dict:
  return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def _indices(sd: Mapping, prefix: str) -> list[int]:
  """Sorted integers N of keys `prefix<N>.` (e.g. ResBlockDownBy1., ResBlockDownBy2., ...)."""
  out = set()
  for k in sd:
    if k.startswith(prefix):
      head = k[len(prefix) :].split(".")[0]
      if head.isdigit():
        out.add(int(head))
  return sorted(out)


def _taps(kernel) -> list[int]:
  """The 1-D taps (smallest 1) of a normalised separable 2-D blur kernel buffer, e.g. [1, 3, 3, 1]."""
  k = np.asarray(kernel, np.float64)
  row = k.sum(axis=0)
  return [int(round(t)) for t in row / row.min()]


def _shape(sd, key, what):
  if key not in sd:
    raise sdc.ConversionError(f"{what}: missing key {key!r}; is this a swapping-autoencoder checkpoint?")
  return tuple(np.asarray(sd[key]).shape)


def config_from_state_dict(sd: Mapping, options: Mapping | None = None) -> dict:
  """Constructor arguments of every network present in a `SwappingAutoencoderModel.state_dict()`."""
  options = dict(options or {})
  e, g = _sub(sd, "E."), _sub(sd, "G.")
  if not e or not g:
    found = sorted({k.split(".")[0] for k in sd})[:8]
    raise sdc.ConversionError(
      f"not a Swapping Autoencoder checkpoint: expected keys E.* and G.* (SwappingAutoencoderModel.state_dict()), "
      f"found prefixes {found}"
    )
  what = "Swapping Autoencoder"
  sp_blocks = _indices(e, "DownToSpatialCode.ResBlockDownBy")
  gl_blocks = _indices(e, "DownToGlobalCode.ConvLayerDownBy")
  widths = [_shape(e, "FromRGB.Conv.weight", what)[0]]
  widths += [_shape(e, f"DownToSpatialCode.ResBlockDownBy{n}.conv2.Conv.weight", what)[0] for n in sp_blocks]
  widths += [_shape(e, f"DownToGlobalCode.ConvLayerDownBy{n}.Conv.weight", what)[0] for n in gl_blocks]
  e_blur = _taps(e[f"DownToSpatialCode.ResBlockDownBy{sp_blocks[0]}.conv2.Blur.kernel"]) if sp_blocks else [1]
  spatial_ch, global_ch = _shape(g, "SpatialCodeModulation.scale.weight", what)
  heads = _indices(g, "HeadResnetBlock")
  ups = _indices(g, "UpsamplingResBlock")
  g_blur = _taps(g[f"UpsamplingResBlock{ups[0]}.conv1.conv.blur.kernel"]) if ups else [1]
  config = {
    "encoder": dict(
      widths=[int(w) for w in widths],
      num_downsampling_gl=len(gl_blocks),
      spatial_code_ch=int(_shape(e, "ToSpatialCode.1.Conv.weight", what)[0]),
      global_code_ch=int(_shape(e, "ToGlobalCode.0.weight", what)[0]),
      blur_kernel=e_blur,
    ),
    "generator": dict(
      spatial_code_ch=int(spatial_ch),
      global_code_ch=int(global_ch),
      head_widths=[int(_shape(g, f"HeadResnetBlock{i}.conv1.conv.weight", what)[1]) for i in heads],
      up_widths=[int(_shape(g, f"UpsamplingResBlock{n}.conv1.conv.weight", what)[1]) for n in ups],
      blur_kernel=g_blur,
      use_noise=bool(options.get("netG_use_noise", True)),
    ),
  }
  d = _sub(sd, "D.stylegan2_D.")
  if d:
    blocks = [k for k in _indices(d, "convs.") if k != 0]
    blocks += [int(k.split(".")[1].split("x")[0]) for k in d if k.startswith("convs.") and "x" in k.split(".")[1]]
    n_blocks = len(set(blocks))
    size = 2 ** (n_blocks + 2)
    channels = [(size, int(_shape(d, "convs.0.Conv.weight", what)[0]))]
    for i in range(int(math.log2(size)), 2, -1):
      channels.append((2 ** (i - 1), int(_shape(d, f"convs.{_d_block_name(i)}.conv2.Conv.weight", what)[0])))
    blur = _taps(d[f"convs.{_d_block_name(int(math.log2(size)))}.conv2.Blur.kernel"]) if n_blocks else [1]
    config["discriminator"] = dict(size=size, channels=sorted(channels), blur_kernel=blur)
  p = _sub(sd, "Dpatch.")
  if p:
    max_nc = int(_shape(p, "convs.6.Conv.weight", what)[0])
    n_down = len([k for k in _indices(p, "convs.") if 0 < k < 5]) + len(
      {k.split(".")[1] for k in p if k.startswith("convs.") and "x" in k.split(".")[1]}
    )
    log_size = n_down + 2
    channels = [(2**log_size, int(_shape(p, "convs.0.Conv.weight", what)[0]))]
    for i in range(log_size, 2, -1):
      channels.append((2 ** (i - 1), int(_shape(p, f"convs.{_patch_block_name(i)}.conv2.Conv.weight", what)[0])))
    pair = [int(_shape(p, f"pairlinear.{k}.weight", what)[0]) for k in _indices(p, "pairlinear.")][:-1]
    blur = _taps(p[f"convs.{_patch_block_name(log_size)}.conv2.Blur.kernel"]) if n_down else [1]
    config["patch_discriminator"] = dict(
      patch_size=int(options.get("patch_size", 2**log_size)),
      channels=sorted(channels),
      max_nc=max_nc,
      pair_widths=pair,
      blur_kernel=blur,
    )
  # The encoder and generator are fully convolutional: the training size comes from D or the options.
  config["image_size"] = int(options.get("crop_size", config.get("discriminator", {}).get("size", 0)) or 0) or None
  config["options"] = {k: options[k] for k in sorted(options) if k in TRAINING_OPTIONS}
  return config


# Upstream options a converted model keeps (to fine-tune or evaluate as it was trained); everything else in
# opt.txt (paths, GPU counts, display frequencies) describes the old run, not the model.
TRAINING_OPTIONS = (
  "crop_size",
  "lambda_L1",
  "lambda_GAN",
  "lambda_PatchGAN",
  "lambda_R1",
  "lambda_patch_R1",
  "patch_size",
  "patch_min_scale",
  "patch_max_scale",
  "patch_num_crops",
  "patch_use_aggregation",
  "netG_use_noise",
  "lr",
  "beta1",
  "beta2",
  "R1_once_every",
  "batch_size",
)


def _init_shapes(name: str, config: Mapping):
  key = jax.random.PRNGKey(0)
  if name == "E":
    size = 2 ** (len(config["encoder"]["widths"]) + 2)
    net = swapae.encoder_from_config(config)
    return jax.eval_shape(lambda: net.init(key, jnp.zeros((1, size, size, 3))))
  if name == "G":
    c = config["generator"]
    net = swapae.generator_from_config(config)
    s, t = jnp.zeros((1, 4, 4, c["spatial_code_ch"])), jnp.zeros((1, c["global_code_ch"]))
    return jax.eval_shape(lambda: net.init({"params": key, "noise": key}, s, t))
  if name == "D":
    size = config["discriminator"]["size"]
    net = swapae.discriminator_from_config(config)
    return jax.eval_shape(lambda: net.init(key, jnp.zeros((1, size, size, 3))))
  p = config["patch_discriminator"]["patch_size"]
  net = swapae.patch_discriminator_from_config(config)
  return jax.eval_shape(lambda: net.init(key, jnp.zeros((1, 1, p, p, 3)), jnp.zeros((1, 1, p, p, 3))))


def convert_state_dict(sd: Mapping, options: Mapping | None = None) -> dict:
  """A SwappingAutoencoderModel state dict -> {name: (kind, config, variables)} for E, G[, D, Dpatch]."""
  sd = {k: np.asarray(v) for k, v in sd.items()}
  config = config_from_state_dict(sd, options)
  maps = keymaps(config)
  known = {"num_discriminator_iters"} | {f"{n}." for n in NETWORKS}
  stray = sorted(k for k in sd if k not in known and k.split(".")[0] + "." not in known)
  if stray:
    raise sdc.ConversionError(f"Swapping Autoencoder: {len(stray)} keys were not understood: {stray[:10]}")
  out = {}
  for name in NETWORKS:
    sub = _sub(sd, "D.stylegan2_D." if name == "D" else f"{name}.")
    if name == "D" and not sub and _sub(sd, "D."):
      raise sdc.ConversionError(f"Swapping Autoencoder: D keys {sorted(_sub(sd, 'D.'))[:4]} are not D.stylegan2_D.*")
    if not sub:
      continue
    reader = sdc.StateDictReader(sub, maps[name].what)
    out[name] = (f"{KIND}_{NETWORKS[name]}", config, maps[name].convert(reader, _init_shapes(name, config)))
  return out


# -- upstream's options files ------------------------------------------------------------------------------------


def _parse_value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def read_options_txt(path: pathlib.Path) -> dict:
  """upstream `save_options`' opt.txt: lines `{name:>25}: {value:<30}[\\t[default: ...]]`."""
  out = {}
  for line in path.read_text().splitlines():
    if ":" not in line or line.startswith("-"):
      continue
    name, _, rest = line.partition(":")
    value = rest.split("\t[default:")[0].strip()
    out[name.strip()] = _parse_value(value)
  return out


class _NamespaceOnly(pickle.Unpickler):
  """upstream `save_options` pickles its argparse.Namespace of plain values (str, int, float, bool, None, lists);
  no other class may be constructed, so a crafted opt.pkl cannot run code."""

  def find_class(self, module, name):
    if (module, name) == ("argparse", "Namespace"):
      return argparse.Namespace
    raise pickle.UnpicklingError(f"opt.pkl may hold only an argparse.Namespace or a dict, not {module}.{name}")


def read_options_pkl(path: pathlib.Path) -> dict:
  """upstream's opt.pkl: a pickled argparse.Namespace (or a plain dict of options)."""
  with open(path, "rb") as f:
    opt = _NamespaceOnly(f).load()
  if isinstance(opt, argparse.Namespace):
    return dict(vars(opt))
  if isinstance(opt, dict):
    return dict(opt)
  raise pickle.UnpicklingError(f"opt.pkl holds a {type(opt).__name__}, not an argparse.Namespace or a dict")


def find_options(checkpoint: pathlib.Path) -> tuple[dict, pathlib.Path | None]:
  """Options beside a checkpoint: opt.txt, else opt.pkl, else none ({}, None)."""
  for name, reader in (("opt.txt", read_options_txt), ("opt.pkl", read_options_pkl)):
    path = checkpoint.parent / name
    if path.is_file():
      try:
        return reader(path), path
      except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise sdc.ConversionError(f"{path}: cannot read upstream options ({e})") from None
  return {}, None
