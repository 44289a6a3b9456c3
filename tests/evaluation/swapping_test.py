"""The swap benchmark's ground truth and scores: the true hybrid has the structure image's pose and shape and
the texture image's appearance, and the scores rank candidates as their definitions say."""

import numpy as np

from jaxgeal.datasets import synthetic
from jaxgeal.evaluation import swapping

OPTIONS = synthetic.RenderOptions(mirror_prob=0.5, deformation=0.2, max_clutter=0)


def test_true_hybrid_takes_pose_from_structure_and_appearance_from_texture():
  a, b = synthetic.render(3, 1, 32, OPTIONS), synthetic.render(3, 2, 32, OPTIONS)
  h = synthetic.render(3, 1, 32, OPTIONS.__class__(**{**OPTIONS.to_json(), "appearance_of": (3, 2)}))
  np.testing.assert_array_equal(swapping.hybrid(3, 1, 2, 32, OPTIONS), h["image"])
  np.testing.assert_array_equal(h["mask"], a["mask"])  # same silhouette: A's pose and shape
  np.testing.assert_array_equal(h["keypoints"], a["keypoints"])
  assert not np.allclose(h["image"], a["image"]) and not np.allclose(h["image"], b["image"])
  # The background (appearance) is B's: outside both silhouettes the hybrid equals B.
  outside = (a["mask"] == 0) & (b["mask"] == 0)
  np.testing.assert_allclose(h["image"][outside], b["image"][outside], atol=1e-6)
  np.testing.assert_array_equal(swapping.hybrid(3, 1, 1, 32, OPTIONS), a["image"])


class _Copy:
  """An 'autoencoder' whose structure code is the image and whose decoder returns it: swap = copy A."""

  def encode(self, x):
    return np.asarray(x), np.zeros((len(x), 1))

  def decode(self, s, t):
    return s


class _Oracle(_Copy):
  """Decodes the true hybrid of the pairs it is given (looked up by the structure and texture images)."""

  def __init__(self, data):
    self.data = data

  def encode(self, x):
    return np.asarray(x), np.asarray(x)

  def decode(self, s, t):
    out = []
    for si, ti in zip(s, t):
      d = self.data
      k = [k for k in range(len(d.truth)) if np.array_equal(d.structure[k], si) and np.array_equal(d.texture[k], ti)]
      out.append(d.truth[k[0]] if k else si)
    return np.stack(out)


def test_scores_rank_candidates_by_their_definitions():
  data = swapping.render_pairs(6, 32, 7, OPTIONS)
  assert data.structure.shape == data.truth.shape == (6, 32, 32, 3) and np.all(data.pairs[:, 0] != data.pairs[:, 1])
  copy = swapping.evaluate(_Copy(), data, batch_size=4)
  assert copy["vs_truth"]["swap"] == copy["vs_truth"]["copy_structure"] == copy["vs_truth"]["rec_structure"]
  assert copy["wins"]["copy_structure"] == 0.0 and copy["reconstruction"]["l1"]["mean"] == 0.0
  oracle = swapping.evaluate(_Oracle(data), data, batch_size=4)
  assert oracle["vs_truth"]["swap"]["l1"]["mean"] == 0.0 and oracle["vs_truth"]["swap"]["lcn"]["mean"] < 1e-6
  assert oracle["wins"]["copy_structure"] == oracle["wins"]["copy_texture"] == 1.0
  text = swapping.markdown(oracle)
  assert "| swap | 0.0000" in text and "100 % of pairs" in text
  assert "structure_pck" not in oracle  # key point scores need a detector
  assert oracle["object_l1"]["swap"]["mean"] == 0.0 and oracle["wins_object"]["copy_texture"] == 1.0


def test_object_score_counts_the_silhouette_only():
  data = swapping.render_pairs(6, 32, 7, OPTIONS)
  assert data.mask.shape == (6, 32, 32) and np.all(data.mask.sum(axis=(1, 2)) > 20)
  inside = data.mask[..., None] == 1
  # The truth on the object, B's background around it: nothing counts against it on the object alone.
  pasted = np.where(inside, data.truth, data.texture)
  wrong_object = np.where(inside, -data.truth, data.truth)  # the truth's background, the object negated
  np.testing.assert_array_equal(swapping.object_l1(pasted, data.truth, inside[..., 0]), 0.0)
  np.testing.assert_allclose(
    swapping.object_l1(wrong_object, data.truth, inside[..., 0]),
    [2 * np.abs(t[m[..., 0]]).mean() for t, m in zip(data.truth, inside)],
    rtol=1e-6,
  )
  assert np.all(swapping.object_l1(data.texture, data.truth, data.mask) > 0)


def test_structure_pck_counts_detections_within_alpha_of_a_box_side_and_visible_points_only():
  data = swapping.render_pairs(8, 32, 7, OPTIONS)
  side = np.max(data.bbox[:, 2:] - data.bbox[:, :2], axis=-1)
  exact = lambda images: data.keypoints
  assert swapping.structure_pck(data.truth, data, exact) == {"0.05": 1.0, "0.1": 1.0}
  # Every detection 0.075 x the box side to the right: within alpha 0.1, not within 0.05.
  off = lambda images: data.keypoints + np.stack([0.075 * side, 0 * side], -1)[:, None]
  assert swapping.structure_pck(data.truth, data, off) == {"0.05": 0.0, "0.1": 1.0}
  # Points the truth hides do not count, right or wrong.
  hidden = data.keypoints + 100.0 * ~data.visibility[..., None]
  assert swapping.structure_pck(data.truth, data, lambda images: hidden, alphas=(0.1,)) == {"0.1": 1.0}
  result = swapping.evaluate(_Copy(), data, lambda images: data.keypoints, batch_size=4)
  assert set(result["structure_pck"]) == {*swapping.CANDIDATES, "truth"}
  text = swapping.markdown(result)
  assert "PCK@0.05 | PCK@0.1 |" in text and "On the truth itself it scores PCK@0.05 1.000, PCK@0.1 1.000" in text
