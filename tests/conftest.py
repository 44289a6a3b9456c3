"""Test-session set-up: JAX's persistent compilation cache, so that identical programs (a trainer resumed in
the same test, the same model in several tests, subprocesses) compile once, and cheaper compiling (LLVM level 1;
outside the parity tests most optimisations off): compiling, not running, is most of the suite's time on a
2-core CPU (a GANgealing trainer test on an AVX2 EPYC: 52 of its 79 s in XLA's backend, 19 s tracing and
lowering). Outside the parity tests XLA:CPU also emits fused loops with its older emitters, which compile faster."""

import os
import pathlib

import jax
import jax.numpy as jnp
import pytest
from jax._src import compiler as _compiler

CACHE = pathlib.Path(
  os.environ.get("JAXGEAL_TEST_JIT_CACHE", pathlib.Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax")
)
# Each setting goes into this process's config and into JAX's own environment variable, which subprocess tests
# (`python -m jaxgeal.main ...`, the fake-device scripts) inherit.
for name, value in (
  ("jax_compilation_cache_dir", str(CACHE)),
  ("jax_persistent_cache_min_compile_time_secs", 0.5),
  ("jax_persistent_cache_min_entry_size_bytes", 0),
):
  os.environ.setdefault(name.upper(), str(value))
  jax.config.update(name, type(value)(os.environ[name.upper()]))
# LLVM optimisation level 1 instead of 2 for the tests' programs: StyleGAN2's training step compiles in
# ~25 s instead of ~43 s (2-core CPU); tests run tiny shapes, so the slower code costs little.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=1".strip()

_most_optimizations_off = None

# XLA:CPU's older loop emitters: the Swapping Autoencoder's training step (349 convolutions, 4642 fusions)
# compiled in 33 s instead of 52 s with most optimisations off, and ran no slower (AVX2 EPYC).
FUSION_EMITTERS_OFF = ("xla_cpu_use_fusion_emitters", False)


def _fusion_emitters_option() -> bool:
  """Whether this jaxlib knows FUSION_EMITTERS_OFF (an unknown option is an error; in XLA_FLAGS it aborts)."""
  try:
    jax.jit(lambda x: x + 1, compiler_options=dict([FUSION_EMITTERS_OFF])).lower(jnp.zeros(())).compile()
  except Exception:  # jaxlib's own runtime error type
    return False
  return True


# Compiling once here also makes this process read XLA_FLAGS now: per-test changes below reach subprocesses only.
_FUSION_EMITTERS_FLAG = f"--{FUSION_EMITTERS_OFF[0]}=false" if _fusion_emitters_option() else ""
_get_compile_options = _compiler.get_compile_options


def _get_compile_options_for_tests(*args, **kwargs):
  """JAX's compile options, plus FUSION_EMITTERS_OFF while most optimisations are off. (JAX has no public
  setting for default compiler options; a private name that moves only costs the speed-up.)"""
  options = _get_compile_options(*args, **kwargs)
  if _most_optimizations_off and _FUSION_EMITTERS_FLAG:
    options.env_option_overrides = [*options.env_option_overrides, FUSION_EMITTERS_OFF]
  return options


_compiler.get_compile_options = _get_compile_options_for_tests


def _disable_most_optimizations(off: bool):
  """Tests that are not parity tests compile with most of XLA's optimisations off (LLVM level 0, no expensive
  passes: `jax_disable_most_optimizations`; the GANgealing trainer tests took 649 s instead of 785 s, cold
  cache, AVX2 EPYC) and with the older loop emitters. Parity tests keep level 1 and XLA's default emitters:
  their tolerances rest on that rounding."""
  global _most_optimizations_off
  if off == _most_optimizations_off:
    return
  if _most_optimizations_off is not None:
    jax.clear_caches()  # A program compiled under one setting must not serve a test of the other.
  _most_optimizations_off = off
  jax.config.update("jax_disable_most_optimizations", off)
  # For the tests' subprocesses:
  os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = str(int(off))
  if _FUSION_EMITTERS_FLAG:
    flags = os.environ.get("XLA_FLAGS", "").replace(_FUSION_EMITTERS_FLAG, "").split()
    os.environ["XLA_FLAGS"] = " ".join(flags + [_FUSION_EMITTERS_FLAG] * off)


@pytest.hookimpl(tryfirst=True)  # Before the test's fixtures are set up: they compile too.
def pytest_runtest_setup(item):
  _disable_most_optimizations(item.get_closest_marker("parity") is None)


def _dispatch_rank(item) -> int:
  """Heavy tests first: marked slow, then the trainers' (each compiles a training step), then the parity tests
  (each compiles an upstream model's forward or second-order backward pass), then the rest."""
  if item.get_closest_marker("slow"):
    return 0
  if "trainers" in item.path.parts:
    return 1
  return 2 if item.get_closest_marker("parity") else 3


def pytest_collection_modifyitems(items):
  # With `-n 2` (pytest-xdist hands tests out in collection order), a multi-minute test dispatched last leaves
  # the other worker idle for minutes; dispatched first, the many short tests fill in around it. Stable sort:
  # within a rank, tests keep their files' order.
  items.sort(key=_dispatch_rank)


# Test files whose tests share a costly module fixture (a trained model): with `-n`, each goes to one worker as
# a whole, which builds the fixture once. Every other test goes on its own to whichever worker is free.
SHARED_FIXTURE_FILES = {
  "tests/trainers/cluster_classifier_test.py",  # the stage-1 model and the stage-2 run
  "tests/trainers/stylegan2_trainer_test.py",  # the 4-step run
  "tests/trainers/swapae_trainer_test.py",  # the 4-step run
}


def pytest_xdist_make_scheduler(config, log):
  """`-n N` (pytest-xdist's default --dist load) as above. xdist_group marks cannot do this here: --dist
  loadgroup renames items' node ids, which pytest 9 ignores, so marked tests still spread over workers."""
  if config.option.dist != "load":
    return None
  from xdist.scheduler import LoadScopeScheduling

  class FileGroups(LoadScopeScheduling):
    def _split_scope(self, nodeid):
      path = nodeid.split("::", 1)[0]
      return path if path in SHARED_FIXTURE_FILES else nodeid

  return FileGroups(config, log)
