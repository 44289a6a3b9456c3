"""Tiny model directories for jaxgeal.align tests: random-init STNs whose similarity head is set to a known warp."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgeal import checkpoint
from jaxgeal.models import stn as stn_lib

SIZE = 64
CHANNELS = ((4, 16), (8, 16), (16, 16), (32, 16), (64, 8))
# The known similarity: rotation 0.2 rad, scale 0.8, shift (0.1, -0.05) (normalised coordinates).
ROT, SCALE, TX, TY = 0.2, 0.8, 0.1, -0.05


def known_matrix():
  c, s = math.cos(ROT) * SCALE, math.sin(ROT) * SCALE
  return np.array([[c, -s, TX], [s, c, TY]], np.float64)


def image_from_congealed(c, size=SIZE, res=SIZE, matrix=None):
  """Pixel (x, y) of the congealed image of side res -> pixel of the size x size image under the warp."""
  m = known_matrix() if matrix is None else matrix
  n = (2.0 * np.asarray(c, np.float64) + 1.0) / res - 1.0
  q = n @ m[:, :2].T + m[:, 2]
  return ((q + 1.0) * size - 1.0) / 2.0


def make_model(path, transforms=("similarity", "flow"), flow_random=False, seed=0):
  module = stn_lib.build_stn(transforms, flow_size=SIZE, supersize=SIZE, channels=CHANNELS, num_heads=1)
  params = jax.jit(module.init)(jax.random.PRNGKey(seed), jnp.zeros((1, SIZE, SIZE, 3)))["params"]
  params = jax.tree_util.tree_map(np.asarray, params)
  sim = params["stns_0"] if "stns_0" in params else params
  # The head's kernel starts at zero, so its output is exactly the bias: (rot, log-scale, tx, ty) with
  # rot = pi * tanh(o1).
  sim["warp_head"]["linear"]["bias"] = np.array([math.atanh(ROT / math.pi), math.log(SCALE), TX, TY], np.float32)
  if flow_random:
    fo = params["stns_1"]["warp_head"]["flow_out_2"]
    fo["weight"] = np.random.RandomState(seed).normal(0, 0.5, fo["weight"].shape).astype(np.float32)
  cfg = dict(stn_lib.config_of(module), test={"padding_mode": "border", "iters": 1})
  checkpoint.save_models(path, {"t_ema": ("stn", cfg, {"params": params})})
  return path


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
  return make_model(tmp_path_factory.mktemp("align") / "model")


@pytest.fixture(scope="session")
def sim_model_dir(tmp_path_factory):
  return make_model(tmp_path_factory.mktemp("align_sim") / "model", transforms=("similarity",))


@pytest.fixture(scope="session")
def images():
  rng = np.random.RandomState(0)
  return rng.uniform(-1, 1, (3, SIZE, SIZE, 3)).astype(np.float32)


@pytest.fixture(scope="session")
def aligner(model_dir):
  from jaxgeal.align import Aligner

  return Aligner.load(model_dir)
