"""Config variants: `--config=configs/X.py:<variant>` applies a named override (e.g. `tiny`, the CPU-sized
version of a paper config) to the config the file builds."""

from collections.abc import Callable, Mapping

import ml_collections


class UnknownVariantError(ValueError):
  """`configs/X.py:<name>` with a name the file does not declare; `known` lists the names it does."""

  def __init__(self, message: str, known=()):
    super().__init__(message)
    self.known = sorted(known)

  @classmethod
  def of(cls, name: str, known) -> "UnknownVariantError":
    return cls(f"unknown config variant {name!r}; known: {sorted(known)}", known)


Variant = Callable[[ml_collections.ConfigDict], ml_collections.ConfigDict]


def apply_variant(
  c: ml_collections.ConfigDict, arg: str | None, variants: Mapping[str, Variant]
) -> ml_collections.ConfigDict:
  """`variants[arg](c)`; None or '' returns the config itself; an unknown name is an error naming the known."""
  if not arg:
    return c
  if arg not in variants:
    raise UnknownVariantError.of(arg, variants)
  return variants[arg](c)
