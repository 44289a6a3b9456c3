"""The upstream swapae fixture converted once into a model directory, shared by the jaxgeal.swap tests."""

import pytest

from jaxgeal import checkpoint
from jaxgeal.convert import swapae as convert
from tests import fixtures


@pytest.fixture(scope="session")
def swapae_fixture():
  """The first `swapae` fixture (skips cleanly where the fixtures are absent)."""
  fx = fixtures.collect("swapae")[0].values[0]
  if fx is None:
    pytest.skip(f"no swapae fixture under {fixtures.fixture_root()}")
  return fx


@pytest.fixture(scope="session")
def model_dir(swapae_fixture, tmp_path_factory):
  """`python -m jaxgeal.convert swapae` of the fixture checkpoint (E, G, D, Dpatch; 64 px)."""
  fx = swapae_fixture
  sd = fixtures.load_checkpoint(fx, fx.checkpoint_file())
  out = tmp_path_factory.mktemp("swapae") / "model"
  return checkpoint.save_models(out, convert.convert_state_dict(sd), source=fx.checkpoint_file())
