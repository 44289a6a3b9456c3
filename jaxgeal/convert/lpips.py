"""Convert the perceptual-loss weights GANgealing uses into jaxgeal model directories (wpeebles/gangealing at
ffa6387, `models/losses/lpips.py`).

Sources (all read torch-free with `jaxgeal.convert.torch_pickle`):
  * VGG16 trunk, either layout:
      - torchvision `vgg16()` state dict (`features.{i}.weight/bias`; `classifier.*` is dropped), e.g. the
        ImageNet file `vgg16-397923af.pth` that LPIPS uses;
      - a bare `features` state dict (`{i}.weight/bias`), the layout of GANgealing's
        `pretrained/simclr_vgg_phase150.pt` ("vgg_ssl").
  * LPIPS v0.1 linear heads: the lpips package's `weights/v0.1/vgg.pth` (GANgealing's
    `pretrained/lpips_vgg_v0.1.pt`), keys `lin{k}.model.1.weight` of shape (1, C, 1, 1).
Upstream loads the linear heads with strict=False, so a wrong file silently leaves random heads; here every key
must be understood and every expected key present (`ConversionError` otherwise).

A converted model directory holds one model, named after its loss: "lpips" (trunk + heads, lpips=True) or
"vgg_ssl" (trunk only, lpips=False). `load_perceptual_loss` looks for `<weights_dir>/<kind>/model.json`:

  python -m jaxgeal.convert lpips vgg16-397923af.pth pretrained/lpips --lin lpips_vgg_v0.1.pt
  python -m jaxgeal.convert lpips simclr_vgg_phase150.pt pretrained/vgg_ssl
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxgeal import checkpoint
from jaxgeal.convert import state_dict as sdc
from jaxgeal.convert import torch_pickle
from jaxgeal.models import lpips

MODEL_KIND = "lpips"  # model.json "kind" of both variants; config {"lpips": bool} tells them apart.
DEFAULT_WEIGHTS_DIR = "pretrained"

# Where the upstream files come from, for the error message of a missing model directory.
_SOURCES = {
  "lpips": (
    "python -m jaxgeal.convert lpips VGG16.pth {out} --lin lpips_vgg_v0.1.pt\n"
    "  VGG16.pth: torchvision's ImageNet VGG16 weights "
    "(https://download.pytorch.org/models/vgg16-397923af.pth)\n"
    "  lpips_vgg_v0.1.pt: LPIPS v0.1 linear weights, lpips/weights/v0.1/vgg.pth of "
    "richzhang/PerceptualSimilarity (or of the `lpips` pip package)"
  ),
  "vgg_ssl": (
    "python -m jaxgeal.convert lpips simclr_vgg_phase150.pt {out}\n"
    "  simclr_vgg_phase150.pt: GANgealing's SimCLR VGG16 trunk "
    "(http://efrosgans.eecs.berkeley.edu/gangealing/pretrained/simclr_vgg_phase150.pt)"
  ),
}


def _unwrap(ckpt: Any, what: str) -> Mapping[str, np.ndarray]:
  """A flat {key: array} state dict; accepts {'state_dict': ...} wrappers that some trainers write."""
  if isinstance(ckpt, Mapping) and "state_dict" in ckpt and isinstance(ckpt["state_dict"], Mapping):
    ckpt = ckpt["state_dict"]
  if not isinstance(ckpt, Mapping) or not all(isinstance(v, np.ndarray) for v in ckpt.values()):
    raise sdc.ConversionError(
      f"{what}: expected a flat state dict of tensors, got {type(ckpt).__name__}"
      + (f" with keys {list(ckpt)[:8]}" if isinstance(ckpt, Mapping) else "")
    )
  return ckpt


def convert_vgg16(sd: Mapping[str, np.ndarray]) -> dict:
  """VGG16 trunk params ({'features_{i}': {'weight', 'bias'}}) from a torchvision or `features` state dict."""
  sd = _unwrap(sd, "VGG16")
  if any(k.startswith("features.") for k in sd):
    prefix = "features."
    extra = [k for k in sd if not k.startswith(("features.", "classifier."))]
    if extra:
      raise sdc.ConversionError(f"VGG16 (torchvision layout): unexpected keys {sorted(extra)[:10]}")
    sd = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}  # classifier.* is not used.
  r = sdc.StateDictReader(sd, "VGG16 features")
  params = {}
  in_ch = 3
  for i, out_ch in zip(lpips.CONV_INDICES, lpips.CONV_CHANNELS):
    w = r.take(f"{i}.weight", 4)
    b = r.take(f"{i}.bias", 1)
    if w.shape != (out_ch, in_ch, 3, 3) or b.shape != (out_ch,):
      raise sdc.ConversionError(
        f"VGG16 features: conv {i} has weight {w.shape} / bias {b.shape}, expected "
        f"({out_ch}, {in_ch}, 3, 3) / ({out_ch},); is this a VGG16 (not VGG19/-BN)?"
      )
    params[f"features_{i}"] = {"weight": sdc.conv(w), "bias": b}
    in_ch = out_ch
  # Convolutions after relu5_3 would mean another architecture (VGG19 has features.30+).
  r.check_all_used()
  return params


def convert_linear(sd: Mapping[str, np.ndarray]) -> dict:
  """LPIPS linear heads ({'lin{k}': {'weight': (C,)}}) from `lin{k}.model.1.weight` (1, C, 1, 1)."""
  sd = _unwrap(sd, "LPIPS linear heads")
  r = sdc.StateDictReader(sd, "LPIPS linear heads")
  params = {}
  for k, c in enumerate(lpips.CHANNELS):
    w = r.take(f"lin{k}.model.1.weight", 4)
    if w.shape != (1, c, 1, 1):
      raise sdc.ConversionError(
        f"LPIPS linear heads: lin{k}.model.1.weight has shape {w.shape}, expected (1, {c}, 1, 1) (VGG variant of LPIPS)"
      )
    params[f"lin{k}"] = {"weight": np.ascontiguousarray(w.reshape(c))}
  r.check_all_used()
  return params


def convert(vgg_sd: Mapping[str, np.ndarray], lin_sd: Mapping[str, np.ndarray] | None = None) -> tuple[str, dict, dict]:
  """(name, config, variables): 'lpips' (lpips=True) with linear heads, else 'vgg_ssl' (lpips=False)."""
  params = {"net": convert_vgg16(vgg_sd)}
  if lin_sd is not None:
    params.update(convert_linear(lin_sd))
    return "lpips", {"lpips": True}, {"params": params}
  return "vgg_ssl", {"lpips": False}, {"params": params}


def convert_files(
  vgg_path: str | os.PathLike,
  out_dir: str | os.PathLike,
  lin_path: str | os.PathLike | None = None,
  overwrite: bool = False,
) -> pathlib.Path:
  """Read the upstream files and write a model directory (see the module docstring); returns its path."""
  vgg_sd = torch_pickle.load(vgg_path)
  lin_sd = torch_pickle.load(lin_path) if lin_path is not None else None
  name, config, variables = convert(vgg_sd, lin_sd)
  source = str(vgg_path) if lin_path is None else f"{vgg_path} + {lin_path}"
  return checkpoint.save_models(out_dir, {name: (MODEL_KIND, config, variables)}, source=source, overwrite=overwrite)


def model_dir(kind: str, weights_dir: str | os.PathLike = DEFAULT_WEIGHTS_DIR) -> pathlib.Path:
  """Where `load_perceptual_loss(kind, weights_dir)` looks: `<weights_dir>/<kind>`."""
  return pathlib.Path(weights_dir) / kind


def load_variables(kind: str, weights_dir: str | os.PathLike = DEFAULT_WEIGHTS_DIR) -> dict:
  """The converted variables of 'lpips' or 'vgg_ssl'; FileNotFoundError naming the file and the command."""
  if kind not in lpips.LOSS_SCALES:
    raise ValueError(f"unknown perceptual loss {kind!r}; expected one of {sorted(lpips.LOSS_SCALES)}")
  path = model_dir(kind, weights_dir)
  if not (path / "model.json").exists():
    raise checkpoint.ModelNotFoundError(
      f"perceptual loss {kind!r}: {path / 'model.json'} is missing (no converted weights). Convert them "
      f"with:\n  " + _SOURCES[kind].format(out=path)
    )
  models = checkpoint.load_models(path)
  if kind not in models:
    raise checkpoint.ModelNotFoundError(
      f"{path} holds {sorted(models)}, not the {kind!r} perceptual loss; "
      f"convert it with:\n  " + _SOURCES[kind].format(out=path)
    )
  model_kind, config, variables = models[kind]
  if model_kind != MODEL_KIND or bool(config.get("lpips")) != (kind == "lpips"):
    raise sdc.ConversionError(
      f"{path}: model {kind!r} has kind {model_kind!r} / config {config}, not a {kind} perceptual loss"
    )
  return variables


def load_perceptual_loss(
  kind: str = "lpips", weights_dir: str | os.PathLike = DEFAULT_WEIGHTS_DIR, precision: Any = None
) -> lpips.PerceptualLoss:
  """GANgealing's `get_perceptual_loss(kind)`: a `PerceptualLoss` ((B,) = scale * distance, jit-able).

  kind 'lpips': LPIPS v0.1 (VGG16 ImageNet trunk + linear heads); 'vgg_ssl': SimCLR VGG16 trunk, channel-sum
  distance divided by 18. Weights come from `<weights_dir>/<kind>` (a model directory written by
  `python -m jaxgeal.convert lpips`).
  """
  return lpips.make_perceptual_loss(kind, load_variables(kind, weights_dir), precision=precision)
