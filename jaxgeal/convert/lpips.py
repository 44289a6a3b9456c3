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
"vgg_ssl" (trunk only, lpips=False); `jaxgeal.models.lpips.load_perceptual_loss` reads
`<weights_dir>/<kind>/model.json`:

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
  return checkpoint.save_models(
    out_dir, {name: (lpips.MODEL_KIND, config, variables)}, source=source, overwrite=overwrite
  )
