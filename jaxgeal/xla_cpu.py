"""XLA:CPU compiler options for jaxgeal's forward-only programs (congealing and the commands built on it).

jaxlib 0.10.2's XLA:CPU hands every single convolution and dot to the YNNPACK library. For the spatial
transformer's convolutions XLA's own kernels are faster on the CPUs measured: congealing 256 -> 128 ran 21-23 %
faster on a 2-core AVX2 EPYC and 10-18 % on an AVX-512 one (benchmarks/README.md, "XLA:CPU's YNNPACK options"
and the paragraph after it). `INFERENCE_OPTIONS` keeps only dots in YNNPACK (`individual_dot`; the `dot` fusion
miscompiles, see there).

Only forward programs take them: the sums run in another order, which moves float32 results by rounding. That
keeps the STN's outputs within the parity tolerances (tests/models/stn_test.py runs them under these options),
but on some CPUs it moved three ill-conditioned training gradients of the clustering loss past theirs, so the
training steps compile with XLA's defaults.

`compiler_options()` returns the options for `jax.jit(..., compiler_options=...)`, or {} where they do not
apply: a backend other than the CPU, a jaxlib that does not know the option (probed once by compiling a tiny
program; an unknown option is an error, not a warning), XLA_FLAGS that already set it (the user's choice
stands), or $JAXGEAL_XLA_CPU_OPTIONS set to `off` (`on`, the default, or `off`; anything else is a
ValueError, which the commands print as one line).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

OPTION = "xla_cpu_experimental_ynn_fusion_type"
INFERENCE_OPTIONS = {OPTION: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
ENV = "JAXGEAL_XLA_CPU_OPTIONS"
ON = ("on", "1", "true")
OFF = ("off", "0", "false")


@functools.cache
def _accepted(options: tuple[tuple[str, str], ...]) -> bool:
  """Whether this jaxlib's XLA:CPU compiles a program with `options`."""
  try:
    jax.jit(lambda x: x + 1, compiler_options=dict(options)).lower(jnp.zeros((), jnp.float32)).compile()
  except Exception:  # jaxlib raises its own runtime error type for an unknown option or value
    return False
  return True


def compiler_options() -> dict[str, str]:
  """`INFERENCE_OPTIONS` where they apply (see the module docstring), else {}."""
  setting = os.environ.get(ENV, "on").strip().lower()
  if setting not in ON + OFF:
    raise ValueError(f"${ENV}={os.environ[ENV]!r}: set it to 'on' (the default) or 'off'")
  if setting in OFF:
    return {}
  if OPTION in os.environ.get("XLA_FLAGS", ""):
    return {}
  if jax.default_backend() != "cpu":
    return {}
  if not _accepted(tuple(sorted(INFERENCE_OPTIONS.items()))):
    return {}
  return dict(INFERENCE_OPTIONS)
