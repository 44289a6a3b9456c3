"""jaxgeal.xla_cpu: XLA:CPU options for forward-only programs, and where they are left out."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgeal import xla_cpu


@pytest.fixture(autouse=True)
def _no_user_settings(monkeypatch):
  monkeypatch.delenv(xla_cpu.ENV, raising=False)
  monkeypatch.setenv("XLA_FLAGS", "")


def test_options_on_a_cpu_whose_jaxlib_knows_them():
  assert jax.default_backend() == "cpu"
  assert xla_cpu.compiler_options() == xla_cpu.INFERENCE_OPTIONS


def test_same_convolution_to_float_rounding():
  """Another kernel for the convolution, the same numbers up to float32 sums in another order."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 12, 12, 32))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 32, 48)) / np.sqrt(9 * 32)
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  default = jax.jit(conv)(x, w)
  optioned = jax.jit(conv, compiler_options=xla_cpu.compiler_options())(x, w)
  np.testing.assert_allclose(optioned, default, atol=1e-5)
  assert float(jnp.max(jnp.abs(default))) > 1.0


@pytest.mark.parametrize("setting", ["off", "0", "OFF "])
def test_turned_off_by_the_environment(monkeypatch, setting):
  monkeypatch.setenv(xla_cpu.ENV, setting)
  assert xla_cpu.compiler_options() == {}


@pytest.mark.parametrize("setting", ["of", "none", ""])
def test_a_wrong_setting_is_one_clear_error(monkeypatch, setting):
  monkeypatch.setenv(xla_cpu.ENV, setting)
  with pytest.raises(ValueError, match=r"^\$JAXGEAL_XLA_CPU_OPTIONS=.*set it to 'on' \(the default\) or 'off'$"):
    xla_cpu.compiler_options()


def test_xla_flags_that_set_the_option_stand(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", f"--{xla_cpu.OPTION}=dot")
  assert xla_cpu.compiler_options() == {}


def test_other_backends_get_none(monkeypatch):
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert xla_cpu.compiler_options() == {}


def test_a_jaxlib_that_does_not_know_the_option_gets_none(monkeypatch):
  """An unknown option is a compile error in XLA, so it is probed first, not passed blindly."""
  monkeypatch.setattr(xla_cpu, "INFERENCE_OPTIONS", {xla_cpu.OPTION: "LIBRARY_FUSION_TYPE_NO_SUCH_TYPE"})
  assert xla_cpu.compiler_options() == {}
  monkeypatch.setattr(xla_cpu, "INFERENCE_OPTIONS", {"xla_cpu_no_such_option": "1"})
  assert xla_cpu.compiler_options() == {}
