"""Aligner: point ops through a known similarity warp, transfer, propagation, flow scores."""

import numpy as np
import pytest

from jaxgeal import xla_cpu
from jaxgeal.align import Aligner, ModelNotFoundError
from tests.align.conftest import SIZE, image_from_congealed, known_matrix


@pytest.fixture(scope="module")
def sim_aligner(sim_model_dir):
  return Aligner.load(sim_model_dir)


CONGEALED = np.array([[10.0, 20.0], [32.5, 31.0], [50.0, 12.25], [5.0, 55.0]], np.float32)


@pytest.mark.parametrize("which", ["composed", "similarity"])
def test_congeal_uncongeal_known_similarity(which, aligner, sim_aligner, images):
  a = aligner if which == "composed" else sim_aligner
  out = a.congeal(images)
  assert out["aligned"].shape == (3, SIZE, SIZE, 3) and not out["flipped"].any()
  np.testing.assert_allclose(out["matrix"], np.broadcast_to(known_matrix(), (3, 2, 3)), atol=1e-5)
  congealed = np.broadcast_to(CONGEALED, (3,) + CONGEALED.shape)
  expected = image_from_congealed(congealed)
  img_pts = a.uncongeal_points(images, congealed, out=out)
  np.testing.assert_allclose(img_pts, expected, atol=1e-3)
  back = a.congeal_points(images, img_pts, out=out)
  np.testing.assert_allclose(back, congealed, atol=1e-3)


def test_transfer_points_two_known_warps(aligner, images, tmp_path):
  # A and B share the warp here, so transfer is the identity; with a flipped B it mirrors x.
  pa = np.broadcast_to(np.array([[20.0, 30.0], [40.0, 25.0]], np.float32), (3, 2, 2))
  pb = aligner.transfer_points(images, images, pa)
  np.testing.assert_allclose(pb, pa, atol=1e-2)


def test_transfer_points_different_warps(aligner, images):
  # Composite of two known warps: A with the model's warp, B with the same warp after mirroring B
  # (the grid then samples x -> -x), so a point of A lands at B's mirrored position.
  out_a = aligner.congeal(images)
  out_b = dict(out_a, grid=out_a["grid"] * np.array([-1.0, 1.0], np.float32))
  pa = np.broadcast_to(np.array([[20.0, 30.0], [40.0, 25.0]], np.float32), (3, 2, 2))
  congealed = aligner.congeal_points(images, pa, out=out_a)
  pb = aligner.uncongeal_points(images, congealed, out=out_b)
  np.testing.assert_allclose(pb[..., 0], SIZE - 1 - pa[..., 0], atol=1e-2)
  np.testing.assert_allclose(pb[..., 1], pa[..., 1], atol=1e-2)


def test_propagate_one_pixel_label(aligner, images):
  label = np.zeros((SIZE, SIZE, 4), np.uint8)
  label[20, 30] = (255, 0, 0, 255)  # (x, y) = (30, 20).
  prop = aligner.propagate(images, label, sigma=1.0)
  target = image_from_congealed(np.array([30.0, 20.0]))
  for i in range(3):
    w = prop["weight"][i]
    y, x = np.unravel_index(np.argmax(w), w.shape)
    assert abs(x - target[0]) <= 1 and abs(y - target[1]) <= 1
    cy, cx = (w * np.arange(SIZE)[:, None]).sum() / w.sum(), (w * np.arange(SIZE)[None]).sum() / w.sum()
    assert abs(cx - target[0]) <= 1 and abs(cy - target[1]) <= 1
    np.testing.assert_allclose(prop["rgba"][i, y, x], [1, -1, -1, 1], atol=1e-5)
  assert prop["composite"].shape == images.shape


def test_propagate_returns_correspondences_and_blends(aligner, images):
  label = np.zeros((SIZE, SIZE, 4), np.uint8)
  label[20:40, 10:50] = (255, 255, 255, 255)
  label[5, 7] = (0, 0, 0, 40)
  alpha = aligner.propagate(images, label)
  lap = aligner.propagate(images, label, blend="laplacian", levels=4, out=aligner.congeal(images))
  # points: where each labelled congealed pixel (row-major over alpha > 0) lands in each image.
  ys, xs = np.mgrid[20:40, 10:50]
  congealed = np.concatenate([[[7.0, 5.0]], np.stack([xs.ravel(), ys.ravel()], -1)])  # Row 5 comes first.
  np.testing.assert_allclose(alpha["points"][0], image_from_congealed(congealed), atol=1e-3)
  assert alpha["inside"].shape == (3, len(congealed)) and alpha["inside"].all()
  np.testing.assert_array_equal(lap["rgba"], alpha["rgba"])  # Blending changes only the composite.
  assert lap["composite"].shape == images.shape and np.abs(lap["composite"]).max() <= 1.0
  assert np.abs(lap["composite"] - alpha["composite"]).max() > 0.05
  with pytest.raises(ValueError, match="blend must be one of"):
    aligner.propagate(images, label, blend="poisson")


def test_average_and_batching(model_dir, images):
  a1, a2 = Aligner.load(model_dir, batch_size=2), Aligner.load(model_dir, batch_size=8)
  np.testing.assert_allclose(a1.average(images), a2.average(images), atol=1e-5)


def test_wrong_size_and_missing_model(aligner, tmp_path):
  with pytest.raises(ValueError, match="Resize"):
    aligner.congeal(np.zeros((1, 32, 32, 3), np.float32))
  with pytest.raises(ModelNotFoundError, match="does not exist"):
    Aligner.load(tmp_path / "nope")


def test_flow_scores_and_congeal_similarity(aligner, images):
  scores = aligner.flow_scores(images)
  np.testing.assert_allclose(scores, 0.0, atol=1e-7)  # Random init: the flow head is zero.
  sim = aligner.congeal_similarity(images)
  np.testing.assert_allclose(sim["scale"], 0.8, atol=1e-5)
  np.testing.assert_allclose(sim["effective_resolution"], 0.8 * SIZE, atol=1e-3)
  assert sim["aligned"].shape == images.shape and not sim["oob"].any()
  # Upstream congeal_dataset.py: sqrt(det M) * min(w, h) of the original (pre-resize) image.
  originals = [256, 100] + [SIZE] * (len(images) - 2)
  sim = aligner.congeal_similarity(images, source_sizes=originals)
  np.testing.assert_allclose(sim["effective_resolution"], 0.8 * np.array(originals), atol=1e-3)


def test_flipped_round_trip(aligner, images):
  # A flipped image: points are mirrored before congealing and the grid samples the unmirrored image, so
  # congeal followed by uncongeal is still the identity.
  out = aligner.congeal(images)
  out_f = dict(out, flipped=np.ones(3, bool), grid=out["grid"] * np.array([-1.0, 1.0], np.float32))
  p = np.broadcast_to(np.array([[20.0, 30.0], [40.0, 25.0]], np.float32), (3, 2, 2))
  back = aligner.uncongeal_points(images, aligner.congeal_points(images, p, out=out_f), out=out_f)
  np.testing.assert_allclose(back, p, atol=1e-3)


def test_invert_flow_points_smooth_flow():
  import jax.numpy as jnp

  from jaxgeal.align.aligner import invert_flow_points
  from jaxgeal.ops import warp

  yy, xx = np.meshgrid(np.linspace(-1, 1, 32), np.linspace(-1, 1, 32), indexing="ij")
  flow = 0.05 * np.stack([np.sin(2 * yy), np.cos(2 * xx)], -1)[None].astype(np.float32)
  c_true = np.array([[[0.1, -0.3], [-0.5, 0.42], [0.7, 0.05]]], np.float32)
  g = jnp.asarray(flow) + warp.identity_grid(32, 1)
  q = warp.grid_sample(g, jnp.asarray(c_true)[:, :, None], "border")[:, :, 0]
  c = np.asarray(invert_flow_points(jnp.asarray(flow), q))
  np.testing.assert_allclose(c, c_true, atol=2e-4)  # Sub-pixel: 1e-3 px at 32 px is 6e-5 normalised.


def test_congealing_compiles_with_the_xla_cpu_options(model_dir, images, monkeypatch):
  """The forward is jitted with jaxgeal.xla_cpu's options: an option XLA does not know reaches the compiler."""
  monkeypatch.setattr(xla_cpu, "compiler_options", lambda: {"xla_cpu_no_such_option": "1"})
  with pytest.raises(Exception, match="xla_cpu_no_such_option"):
    Aligner.load(model_dir).congeal(images)
