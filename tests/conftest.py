"""Test-session set-up: JAX's persistent compilation cache, so that identical programs (a trainer resumed in
the same test, the same model in several tests, subprocesses) compile once, and cheaper compiling, which is most
of the suite's time on a 2-core CPU: every test, parity tests included, compiles with most of XLA's optimisations
off (LLVM level 0, no expensive passes: `jax_disable_most_optimizations`) and with XLA:CPU's older loop emitters.
Parity outputs stay as far inside their tolerances as under LLVM level 1 (measurements: benchmarks/README.md,
"Test-suite time on a 2-core CPU"). Heavy tests are dispatched first, and the files sharing a costly fixture go
to one worker each."""

import os
import pathlib

import jax
import jax.numpy as jnp

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
os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
jax.config.update("jax_disable_most_optimizations", True)

# XLA:CPU's older loop emitters (where this jaxlib has the option).
FUSION_EMITTERS_OFF = ("xla_cpu_use_fusion_emitters", False)


def _fusion_emitters_option() -> bool:
  """Whether this jaxlib knows FUSION_EMITTERS_OFF (an unknown option is an error; in XLA_FLAGS it aborts)."""
  try:
    jax.jit(lambda x: x + 1, compiler_options=dict([FUSION_EMITTERS_OFF])).lower(jnp.zeros(())).compile()
  except Exception:  # jaxlib's own runtime error type
    return False
  return True


try:  # private: where JAX moves it, the tests only lose the speed-up
  from jax._src import compiler as _compiler
except ImportError:
  _compiler = None

if _fusion_emitters_option() and hasattr(_compiler, "get_compile_options"):
  # This process has read XLA_FLAGS already (the probe compiled): its programs get the option through JAX's
  # compile options (JAX has no public setting for default compiler options; a private name that moves only
  # costs the speed-up), subprocesses through XLA_FLAGS.
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --{FUSION_EMITTERS_OFF[0]}=false".strip()
  _get_compile_options = _compiler.get_compile_options

  def _get_compile_options_for_tests(*args, **kwargs):
    options = _get_compile_options(*args, **kwargs)
    options.env_option_overrides = [*options.env_option_overrides, FUSION_EMITTERS_OFF]
    return options

  _compiler.get_compile_options = _get_compile_options_for_tests


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
