"""jaxgeal.compile_cache: where the commands' persistent compilation cache lives, and how it is turned off."""

import jax
import pytest

from jaxgeal import compile_cache


@pytest.fixture
def no_cache_configured():
  """JAX's cache directory unset for the test (the suite's conftest sets one), restored afterwards."""
  keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
  old = {k: getattr(jax.config, k) for k in keys}
  jax.config.update("jax_compilation_cache_dir", None)
  yield
  for k, v in old.items():
    jax.config.update(k, v)


def test_a_directory_jax_was_given_is_kept():
  configured = jax.config.jax_compilation_cache_dir
  assert configured  # tests/conftest.py sets one
  assert compile_cache.enable("/somewhere/else") == configured
  assert jax.config.jax_compilation_cache_dir == configured


def test_default_is_under_the_user_cache(no_cache_configured, monkeypatch, tmp_path):
  monkeypatch.delenv(compile_cache.ENV, raising=False)
  monkeypatch.setenv("JAXGEAL_CACHE", str(tmp_path))
  assert compile_cache.enable() == str(tmp_path / "jax") == jax.config.jax_compilation_cache_dir
  assert jax.config.jax_persistent_cache_min_compile_time_secs == compile_cache.MIN_COMPILE_SECS


def test_the_environment_variable_chooses_the_directory_or_turns_it_off(no_cache_configured, monkeypatch, tmp_path):
  monkeypatch.setenv(compile_cache.ENV, "off")
  assert compile_cache.enable() is None and not jax.config.jax_compilation_cache_dir
  monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "c"))
  assert compile_cache.enable() == str(tmp_path / "c")


@pytest.mark.parametrize("off", ["off", "None", "0", ""])
def test_an_explicit_off_wins_over_the_environment(no_cache_configured, monkeypatch, tmp_path, off):
  monkeypatch.setenv(compile_cache.ENV, str(tmp_path))
  assert compile_cache.enable(off) is None and not jax.config.jax_compilation_cache_dir
