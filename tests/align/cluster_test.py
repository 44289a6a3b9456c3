"""Clustering models (K > 1): the cluster classifier picks each image's head and flip (§3.2, appendix B.4)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgeal import checkpoint
from jaxgeal.align import Aligner
from jaxgeal.models import cluster_classifier as cls_lib
from jaxgeal.models import stn as stn_lib
from tests.align.conftest import CHANNELS, ROT, SCALE, SIZE, TX, TY, image_from_congealed, known_matrix


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory):
  k = 2
  module = stn_lib.build_stn(("similarity",), flow_size=SIZE, supersize=SIZE, channels=CHANNELS, num_heads=k)
  params = jax.tree_util.tree_map(
    np.asarray, jax.jit(module.init)(jax.random.PRNGKey(0), jnp.zeros((1, SIZE, SIZE, 3)))["params"]
  )
  bias = np.zeros(4 * k, np.float32)  # Index p * K + k: parameter p of head k; head 0 stays the identity.
  bias[[1, 3, 5, 7]] = [math.atanh(ROT / math.pi), math.log(SCALE), TX, TY]
  params["warp_head"]["linear"]["bias"] = bias
  clf = cls_lib.ResnetClassifier(size=SIZE, num_classes=2 * k, supersize=SIZE, channels=CHANNELS)
  cparams = jax.tree_util.tree_map(
    np.asarray, jax.jit(clf.init)(jax.random.PRNGKey(1), jnp.zeros((1, SIZE, SIZE, 3)))["params"]
  )
  cparams["to_logits"]["weight"] = np.zeros_like(cparams["to_logits"]["weight"])
  cparams["to_logits"]["bias"] = np.array([0, 0, 0, 5], np.float32)  # Class 3: head 1, flipped.
  ccfg = {"size": SIZE, "supersize": SIZE, "num_classes": 2 * k, "channels": [list(c) for c in CHANNELS]}
  path = tmp_path_factory.mktemp("cluster") / "model"
  checkpoint.save_models(
    path,
    {
      "t_ema": ("stn", stn_lib.config_of(module), {"params": params}),
      "classifier": ("cluster_classifier", ccfg, {"params": cparams}),
    },
  )
  return path


def test_classifier_assigns_head_and_flip(cluster_dir, images):
  a = Aligner.load(cluster_dir)
  out = a.congeal(images)
  assert out["flipped"].all() and out["aligned"].shape == images.shape
  np.testing.assert_allclose(out["matrix"], np.broadcast_to(known_matrix(), (3, 2, 3)), atol=1e-5)
  congealed = np.broadcast_to(np.array([[10.0, 20.0], [40.0, 33.0]], np.float32), (3, 2, 2))
  img = a.uncongeal_points(images, congealed, out=out)
  expected = image_from_congealed(congealed)
  expected[..., 0] = SIZE - 1 - expected[..., 0]  # Warped the mirrored image.
  np.testing.assert_allclose(img, expected, atol=1e-3)
  np.testing.assert_allclose(a.congeal_points(images, img, out=out), congealed, atol=1e-3)
