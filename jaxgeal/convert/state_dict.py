"""Mapping PyTorch state dicts (rosinality StyleGAN2 layer layout) onto jaxgeal's Flax params.

Upstream layouts: dense weights (out, in), convolutions OIHW, modulated conv weights (1, out, in, k, k), biases
of ToRGB (1, 3, 1, 1), images NCHW. Ours: (in, out), HWIO, (k, k, in, out), (3,), NHWC. Values are copied
unscaled: both sides apply the equalised-learning-rate scale at run time.

`StateDictReader` tracks which keys were used so that a converter can refuse a checkpoint with keys it does
not understand (upstream loads some modules with strict=False and silently ignores wrong keys; we do not).
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np


class ConversionError(ValueError):
  """A state dict does not have the keys or shapes a converter expects."""


class StateDictReader:
  """Key access to a flat state dict with usage tracking and clear errors."""

  def __init__(self, state_dict: Mapping[str, np.ndarray], what: str):
    self.sd = {k: np.asarray(v) for k, v in state_dict.items()}
    self.what = what
    self.used: set[str] = set()

  def has(self, key: str) -> bool:
    return key in self.sd

  def take(self, key: str, ndim: int | None = None) -> np.ndarray:
    if key not in self.sd:
      near = sorted(k for k in self.sd if k.split(".")[0] == key.split(".")[0])[:8]
      raise ConversionError(f"{self.what}: missing key {key!r}" + (f" (keys nearby: {near})" if near else ""))
    v = self.sd[key]
    if ndim is not None and v.ndim != ndim:
      raise ConversionError(f"{self.what}: key {key!r} has shape {v.shape}, expected {ndim} dimensions")
    self.used.add(key)
    return v.astype(np.float32) if v.dtype != np.float32 and v.dtype.kind == "f" else v

  def skip(self, keys: Iterable[str]):
    """Mark buffers we rebuild ourselves (blur kernels, one-hots) as understood."""
    self.used.update(k for k in keys if k in self.sd)

  def skip_suffix(self, *suffixes: str):
    self.skip(k for k in self.sd if k.endswith(suffixes))

  def keys_with_prefix(self, prefix: str) -> list[str]:
    return [k for k in self.sd if k.startswith(prefix)]

  def check_all_used(self):
    left = sorted(set(self.sd) - self.used)
    if left:
      raise ConversionError(f"{self.what}: {len(left)} keys were not understood: {left[:10]}"
                            + (" ..." if len(left) > 10 else ""))


# -- layout helpers -------------------------------------------------------------------------------------------

def dense(w: np.ndarray) -> np.ndarray:
  """(out, in) -> (in, out)."""
  return np.ascontiguousarray(w.T)


def conv(w: np.ndarray) -> np.ndarray:
  """OIHW -> HWIO."""
  return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))


def modconv(w: np.ndarray) -> np.ndarray:
  """(1, out, in, k, k) -> (k, k, in, out)."""
  return np.ascontiguousarray(np.transpose(w[0], (2, 3, 1, 0)))


def dense_from_chw(w: np.ndarray, c: int, h: int, wd: int) -> np.ndarray:
  """A dense weight (out, C*H*W) reading an NCHW-flattened input -> (H*W*C, out) for NHWC flattening."""
  out = w.shape[0]
  return np.ascontiguousarray(w.reshape(out, c, h, wd).transpose(2, 3, 1, 0).reshape(h * wd * c, out))


def nchw(x: np.ndarray) -> np.ndarray:
  """(N, C, H, W) -> (N, H, W, C)."""
  return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


# -- layer converters (rosinality module layouts) -------------------------------------------------------------

def equal_linear(r: StateDictReader, prefix: str, bias: bool = True) -> dict:
  out = {"weight": dense(r.take(f"{prefix}.weight", 2))}
  if bias:
    out["bias"] = r.take(f"{prefix}.bias", 1)
  return out


def conv_layer(r: StateDictReader, prefix: str, downsample: bool = False, activate: bool = True,
               bias: bool = True) -> dict:
  """ConvLayer = Sequential([Blur] (downsample only), EqualConv2d, [FusedLeakyReLU])."""
  i = 0
  if downsample:
    r.skip([f"{prefix}.0.kernel"])
    i = 1
  out = {"conv": {"weight": conv(r.take(f"{prefix}.{i}.weight", 4))}}
  if bias and not activate:
    out["conv"]["bias"] = r.take(f"{prefix}.{i}.bias", 1)
  if activate and bias:
    out["activate"] = {"bias": r.take(f"{prefix}.{i + 1}.bias", 1)}
  return out


def res_block(r: StateDictReader, prefix: str, downsample: bool = True) -> dict:
  return {
      "conv1": conv_layer(r, f"{prefix}.conv1"),
      "conv2": conv_layer(r, f"{prefix}.conv2", downsample=downsample),
      "skip": conv_layer(r, f"{prefix}.skip", downsample=downsample, activate=False, bias=False),
  }


def modulated_conv(r: StateDictReader, prefix: str) -> dict:
  r.skip([f"{prefix}.blur.kernel"])
  return {"weight": modconv(r.take(f"{prefix}.weight", 5)),
          "modulation": equal_linear(r, f"{prefix}.modulation")}


def styled_conv(r: StateDictReader, prefix: str) -> dict:
  return {"conv": modulated_conv(r, f"{prefix}.conv"),
          "noise": {"weight": r.take(f"{prefix}.noise.weight", 1)},
          "activate": {"bias": r.take(f"{prefix}.activate.bias", 1)}}


def to_rgb(r: StateDictReader, prefix: str) -> dict:
  r.skip([f"{prefix}.upsample.kernel"])
  return {"conv": modulated_conv(r, f"{prefix}.conv"),
          "bias": r.take(f"{prefix}.bias", 4).reshape(-1)}


def count_indexed(r: StateDictReader, prefix: str) -> int:
  """Number of consecutive indices i with keys starting `prefix.i.`."""
  n = 0
  while r.keys_with_prefix(f"{prefix}.{n}."):
    n += 1
  return n
