"""Test-session set-up: JAX's persistent compilation cache, so that identical programs (a trainer resumed in
the same test, the same model in several tests, subprocesses) compile once, and a cheaper LLVM optimisation
level: compiling, not running, is most of the suite's time on a 2-core CPU."""
import os
import pathlib

import jax

CACHE = pathlib.Path(os.environ.get("JAXGEAL_TEST_JIT_CACHE", pathlib.Path(__file__).resolve().parents[1]
                                    / ".pytest_cache" / "jax"))
os.environ.setdefault("JAXGEAL_TEST_JIT_CACHE", str(CACHE))
# Subprocess tests (`python -m jaxgeal.main ...`, the fake-device scripts) read the same cache through JAX's
# own environment variables.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# LLVM optimisation level 1 instead of 2 for the tests' programs: StyleGAN2's training step compiles in
# ~25 s instead of ~43 s (2-core CPU); tests run tiny shapes, so the slower code costs little. Level 0 would
# halve compile time again but changes float rounding enough to fail two gradient-parity tolerances.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=1".strip()
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
