"""Mapping PyTorch state dicts (rosinality StyleGAN2 layer layout) onto jaxgeal's Flax params.

Upstream layouts: dense weights (out, in), convolutions OIHW, modulated conv weights (1, out, in, k, k), biases
of ToRGB (1, 3, 1, 1), images NCHW. Ours: (in, out), HWIO, (k, k, in, out), (3,), NHWC. Values are copied
unscaled: both sides apply the equalised-learning-rate scale at run time.

`KeyMap` is the one place where an upstream key is paired with our parameter path and the layout change between
them; converters use it forwards and gradient checks use it backwards.

`StateDictReader` tracks which keys were used so that a converter can refuse a checkpoint with keys it does
not understand (upstream loads some modules with strict=False and silently ignores wrong keys; we do not).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

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

  def keys_with_prefix(self, prefix: str) -> list[str]:
    return [k for k in self.sd if k.startswith(prefix)]

  def check_all_used(self):
    left = sorted(set(self.sd) - self.used)
    if left:
      raise ConversionError(
        f"{self.what}: {len(left)} keys were not understood: {left[:10]}" + (" ..." if len(left) > 10 else "")
      )


# -- layout helpers -------------------------------------------------------------------------------------------


def conv(w: np.ndarray) -> np.ndarray:
  """OIHW -> HWIO."""
  return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))


def count_indexed(r: StateDictReader, prefix: str) -> int:
  """Number of consecutive indices i with keys starting `prefix.i.`."""
  n = 0
  while r.keys_with_prefix(f"{prefix}.{n}."):
    n += 1
  return n


# -- key <-> parameter path maps ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Layout:
  """How one tensor's upstream layout relates to ours; both directions use only array methods, so they work on
  numpy arrays, jax arrays and (under `jax.eval_shape`) abstract values alike."""

  name: str
  ndim: int | None  # upstream rank (None: any)
  to_ours: Callable[[Any], Any]
  to_upstream: Callable[[Any], Any]


VECTOR = Layout("vector", 1, lambda x: x, lambda x: x)
MATRIX = Layout("matrix, same layout", 2, lambda x: x, lambda x: x)
DENSE = Layout("dense (out, in) -> (in, out)", 2, lambda x: x.T, lambda x: x.T)
CONV = Layout("conv OIHW -> HWIO", 4, lambda x: x.transpose(2, 3, 1, 0), lambda x: x.transpose(3, 2, 0, 1))
MODCONV = Layout(
  "modulated conv (1, O, I, k, k) -> (k, k, I, O)",
  5,
  lambda x: x[0].transpose(2, 3, 1, 0),
  lambda x: x.transpose(3, 2, 0, 1)[None],
)
NCHW = Layout("NCHW -> NHWC", 4, lambda x: x.transpose(0, 2, 3, 1), lambda x: x.transpose(0, 3, 1, 2))
RGB_BIAS = Layout("(1, C, 1, 1) -> (C,)", 4, lambda x: x.reshape(-1), lambda x: x.reshape(1, -1, 1, 1))
# A dense layer reading a (C, 4, 4) map flattened NCHW upstream and NHWC here: rows regrouped from (C, H, W)
# to (H, W, C) order.
DENSE_CHW4 = Layout(
  "dense over NCHW-flattened (C, 4, 4) -> over NHWC-flattened",
  2,
  lambda x: x.reshape(x.shape[0], -1, 4, 4).transpose(2, 3, 1, 0).reshape(-1, x.shape[0]),
  lambda x: x.reshape(4, 4, -1, x.shape[-1]).transpose(3, 2, 0, 1).reshape(x.shape[-1], -1),
)
BUFFER = Layout("constant buffer rebuilt from the config (not a parameter)", None, lambda x: x, lambda x: x)


class KeyMap:
  """Upstream state-dict keys <-> our variable paths, from rules `(key template, path template, layout)`.

  Templates may hold `{i}` (a layer index, the same on both sides). A path is a tuple such as
  `('params', 'convs_3', 'conv', 'weight')`; path templates are written with '/' separators. Keys of
  `BUFFER` rules map to the path None: we rebuild those constants (blur kernels) instead of loading them.
  """

  def __init__(self, what: str, rules: Sequence[tuple[str, str | None, Layout]]):
    self.what = what
    self.rules = [
      (self._regex(key), None if path is None else self._regex(path), key, path, layout) for key, path, layout in rules
    ]

  @staticmethod
  def _regex(template: str):
    return re.compile(re.escape(template).replace(r"\{i\}", r"(?P<i>0|[1-9][0-9]*)") + "$")

  def path(self, key: str) -> tuple[tuple[str, ...] | None, Layout]:
    """(our path, layout) of an upstream key; KeyError for a key no rule knows."""
    for key_re, _, _, path, layout in self.rules:
      m = key_re.match(key)
      if m:
        return (None if path is None else tuple(path.format(**m.groupdict()).split("/"))), layout
    raise KeyError(f"{self.what}: no parameter corresponds to upstream key {key!r}")

  def key(self, path: Sequence[str]) -> str:
    """The upstream key of one of our paths (the inverse of `path`)."""
    joined = "/".join(path)
    for _, path_re, key, _, _ in self.rules:
      m = path_re.match(joined) if path_re is not None else None
      if m:
        return key.format(**m.groupdict())
    raise KeyError(f"{self.what}: no upstream key corresponds to parameter {joined!r}")

  def upstream_value(self, key: str, variables: Mapping) -> Any:
    """Our value for an upstream key (e.g. a gradient tree), brought back to the upstream layout."""
    path, layout = self.path(key)
    if path is None:
      raise KeyError(f"{self.what}: upstream key {key!r} is a constant buffer, not a parameter")
    node = variables
    for part in path:
      node = node[part]
    return layout.to_upstream(node)

  def convert(
    self, r: StateDictReader, expected: Mapping, optional: Callable[[tuple[str, ...]], bool] = lambda path: False
  ) -> dict:
    """Every key of `r` placed at its path in our layout, checked against `expected` (a variables tree of
    shapes, e.g. from `jax.eval_shape` of the model's init): missing, unknown and misshapen keys are refused by
    their upstream name. Paths for which `optional(path)` holds may be absent."""
    flat_expected = {
      tuple(str(getattr(k, "key", k)) for k in kp): leaf.shape for kp, leaf in _leaves_with_path(expected)
    }
    out, unknown, placed = {}, [], set()
    for key in r.sd:
      try:
        path, layout = self.path(key)
      except KeyError:
        unknown.append(key)
        continue
      if path is None:
        r.skip([key])
        continue
      if path not in flat_expected:
        unknown.append(key)
        continue
      value = layout.to_ours(r.take(key, layout.ndim))
      if value.shape != flat_expected[path]:
        want = tuple(layout.to_upstream(np.empty(flat_expected[path], np.bool_)).shape)
        raise ConversionError(f"{r.what}: key {key!r} has shape {r.sd[key].shape}, expected {want}")
      node = out
      for part in path[:-1]:
        node = node.setdefault(part, {})
      node[path[-1]] = np.ascontiguousarray(value)
      placed.add(path)
    missing = [p for p in flat_expected if p not in placed and not optional(p)]
    if missing:
      raise ConversionError(
        f"{r.what}: missing key {self.key(missing[0])!r}"
        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
      )
    r.check_all_used()
    return out


def _leaves_with_path(tree):
  import jax  # pylint: disable=g-import-not-at-top

  return jax.tree_util.tree_leaves_with_path(tree)
