"""Specification of `jaxgeal.evaluation.pck`: PCK-Transfer as in Sec. 4.2 / App. B.7 of the GANgealing paper.

Ground truth comes from two places: the synthetic category (`jaxgeal.datasets.synthetic`), whose exact warps
give a perfect transfer function, and tiny hand-made datasets whose PCK is worked out by hand below.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from jaxgeal.datasets import synthetic
from jaxgeal.datasets.synthetic import RenderOptions
from jaxgeal.evaluation import pck

ALPHAS = (0.1, 0.05, 0.01)


def _key(image) -> bytes:
  return np.ascontiguousarray(image).tobytes()


def oracle(ds, ignore_mirroring: bool = False):
  """A transfer function that knows every image's exact warp (images are recognised by content, in both
  orientations: the flip of a render is the render of the other orientation). `ignore_mirroring` makes a
  naive aligner that treats every image as unmirrored, like an STN trained on one orientation only."""
  table = {}
  for image, warp in zip(ds["images"], ds["warps"]):
    table[_key(image)] = warp
    table[_key(image[:, ::-1])] = dataclasses.replace(warp, mirrored=not warp.mirrored)
  if ignore_mirroring:
    table = {k: dataclasses.replace(w, mirrored=False) for k, w in table.items()}

  def transfer(images_a, images_b, keypoints_a):
    return np.stack(
      [synthetic.transfer_points(table[_key(a)], table[_key(b)], k) for a, b, k in zip(images_a, images_b, keypoints_a)]
    )

  return transfer


def identity(images_a, images_b, keypoints_a):
  del images_a, images_b
  return keypoints_a


@pytest.fixture(scope="module")
def synth():
  return synthetic.make_dataset(16, 48, seed=21, options=RenderOptions(occluder_prob=0.3), num_pairs=24)


def hand_made():
  """Three 20 x 20 images, three key points. Identity-transfer errors, by hand:
  pair (0, 1): |(2,2)-(3,2)| = 1, |(10,10)-(10,13)| = 3, |(15,5)-(15,5)| = 0;
  pair (1, 2): |(3,2)-(3,6)| = 4, |(10,13)-(16,13)| = 6, third invisible in image 2 (not counted).
  Target bbox units: image 1 -> 20, image 2 -> 40 (image 0 -> 10)."""
  return dict(
    images=np.zeros((3, 20, 20, 3), np.float32),
    keypoints=np.array(
      [[(2, 2), (10, 10), (15, 5)], [(3, 2), (10, 13), (15, 5)], [(3, 6), (16, 13), (0, 0)]], np.float32
    ),
    visibility=np.array([[1, 1, 1], [1, 1, 1], [1, 1, 0]], bool),
    pck_threshold=np.array([10.0, 20.0, 40.0], np.float32),
    pairs=np.array([[0, 1], [1, 2]]),
    permutation=np.array([0, 1, 2]),
  )


def test_exact_warps_transfer_perfectly_at_every_alpha(synth):
  assert 0 < synth["mirrored"].sum() < 16 and not synth["visibility"].all()
  for kwargs in (dict(pairs="fixed"), dict(pairs="random", num_pairs=20, both_ways=True)):
    res = pck.pck_transfer(oracle(synth), synth, ALPHAS, batch_size=7, **kwargs)
    for a in ALPHAS:
      assert res[pck.alpha_key(a)] == 1.0, (kwargs, res)


def test_identity_transfer_matches_the_hand_computed_values():
  ds = hand_made()
  # alpha_bbox, one way. 0.1: radii 2 and 4 -> (1, 0) of pair 1, (4) of pair 2 (inclusive) = 3 of 5.
  # 0.05: radii 1 and 2 -> (1, 0) = 2 of 5. 0.01: radii 0.2, 0.4 -> (0) = 1 of 5.
  res = pck.pck_transfer(identity, ds, ALPHAS)
  assert (res["pck@0.1"], res["pck@0.05"], res["pck@0.01"]) == (0.6, 0.4, 0.2)
  assert res["num_pairs"] == 2 and res["num_keypoints"] == 5 and res["threshold"] == "bbox"
  # alpha * max(H, W) = 2 for alpha 0.1: errors 1, 0 pass; 3, 4, 6 fail.
  assert pck.pck_transfer(identity, ds, [0.1], threshold="image")["pck@0.1"] == 0.4
  # Both ways adds (1 -> 0), target unit 10, radius 1: errors 1, 0 pass; and (2 -> 1), radius 2: 4, 6 fail.
  res = pck.pck_transfer(identity, ds, [0.1], both_ways=True)
  assert res["pck@0.1"] == 0.5 and res["num_keypoints"] == 10 and res["num_transfers"] == 4


def test_only_keypoints_visible_in_both_images_count():
  ds = hand_made()
  seen = []

  def spy(images_a, images_b, keypoints_a):
    seen.append(np.asarray(keypoints_a))
    return keypoints_a

  ds["visibility"][0, 1] = False  # Now only key points 0 and 2 of pair (0, 1) count (and 0, 1 of pair (1, 2)).
  ds["keypoints"][0, 1] = np.nan  # Invisible coordinates may be anything; the model is given 0 there.
  res = pck.pck_transfer(spy, ds, [0.1])
  assert res["num_keypoints"] == 4 and res["pck@0.1"] == 3 / 4  # Errors 1, 0 | 4, 6 at radii 2 | 4.
  res = pck.pck_transfer(lambda *a: np.full((len(a[2]), 3, 2), np.nan), ds, [0.1])
  assert res["pck@0.1"] == 0.0, "a prediction that is not a number is wrong"
  assert seen[0][0, 1].tolist() == [0.0, 0.0]
  # Visibility given as a third coordinate (upstream's keypoints.pt) is the same.
  ds3 = dict(ds, keypoints=np.concatenate([ds["keypoints"], ds["visibility"][..., None]], -1))
  del ds3["visibility"]
  assert pck.pck_transfer(identity, ds3, [0.1])["num_keypoints"] == 4


def test_bootstrap_spread_is_zero_for_a_perfect_transfer_and_positive_otherwise(synth):
  exact = pck.pck_transfer(oracle(synth), synth, ALPHAS, num_bootstrap=30)
  for a in ALPHAS:
    assert exact[pck.alpha_key(a) + "_std"] == 0.0
  naive = pck.pck_transfer(identity, synth, ALPHAS, num_bootstrap=30)
  assert 0.0 < naive["pck@0.1"] < 1.0 and naive["pck@0.1_std"] > 0.0
  again = pck.pck_transfer(identity, synth, ALPHAS, num_bootstrap=30)
  assert again == naive, "bootstrap resamples are seeded"
  with pytest.raises(ValueError, match="num_bootstrap"):
    pck.pck_transfer(identity, synth, ALPHAS, num_bootstrap=1)


def test_thresholds_follow_the_protocol():
  # Two 100 x 100 images; the target's box unit (50) is used, not the source's (10).
  ds = dict(
    images=np.zeros((2, 100, 100, 3), np.float32),
    keypoints=np.array([[(10, 10)], [(60, 60)]], float),
    pck_threshold=np.array([10.0, 50.0]),
    pairs=np.array([[0, 1]]),
  )
  off_by = lambda d: lambda ia, ib, ka: np.array([[(60.0 + d, 60.0)]])
  assert pck.pck_transfer(off_by(4), ds, [0.1])["pck@0.1"] == 1.0  # 4 <= 0.1 * 50.
  assert pck.pck_transfer(off_by(5), ds, [0.1])["pck@0.1"] == 1.0  # Inclusive.
  assert pck.pck_transfer(off_by(6), ds, [0.1])["pck@0.1"] == 0.0
  # Random pairs default to alpha * max(H, W) (CUB): with both ground truths at (60, 60), an error of 4 passes
  # at 0.05 * 100 whichever way the random pair goes (image 0's box unit would give 0.5 and fail).
  same = dict(ds, keypoints=np.array([[(60, 60)], [(60, 60)]], float))
  res = pck.pck_transfer(off_by(4), same, [0.05, 0.01], pairs="random", num_pairs=1)
  assert res["threshold"] == "image" and res["pck@0.05"] == 1.0 and res["pck@0.01"] == 0.0
  assert pck.image_thresholds(ds, "image").tolist() == [100.0, 100.0]
  assert pck.image_thresholds(ds, "bbox").tolist() == [10.0, 50.0]
  # A declared threshold says what pck_threshold measures (CUB stores max(H, W) there).
  cub_like = dict(
    ds, threshold="image", pck_threshold=np.array([100.0, 100.0]), bbox=np.array([[0, 0, 10, 4], [0, 0, 20, 50]], float)
  )
  assert pck.pck_transfer(off_by(4), cub_like, [0.05])["threshold"] == "image"
  assert pck.image_thresholds(cub_like, "bbox").tolist() == [10.0, 50.0]
  with pytest.raises(ValueError, match="bbox"):
    pck.image_thresholds(dict(keypoints=ds["keypoints"]), "bbox")


def test_results_are_json_serialisable_fractions_keyed_by_alpha(synth):
  res = pck.pck_transfer(identity, synth, ALPHAS, num_bootstrap=5)
  assert json.loads(json.dumps(res)) == res
  for a in ALPHAS:
    assert 0.0 <= res[f"pck@{a:g}"] <= 1.0 and res[f"pck@{a:g}_std"] >= 0.0
  assert {"pck@0.1", "pck@0.05", "pck@0.01", "num_pairs", "num_keypoints"} <= set(res)
  assert res["num_pairs"] == len(synth["pairs"])
  assert res["num_keypoints"] == int(
    (synth["visibility"][synth["pairs"][:, 0]] & synth["visibility"][synth["pairs"][:, 1]]).sum()
  )


def test_random_pairs_follow_upstream_permutation_scheme():
  pairs = pck.sample_pairs(11, "random", seed=4)
  assert pairs.shape == (5, 2) and len(np.unique(pairs)) == 10, "one permutation: each image at most once"
  assert np.all(pairs[:, 0] != pairs[:, 1])
  np.testing.assert_array_equal(pairs, pck.sample_pairs(11, "random", seed=4))
  assert not np.array_equal(pairs, pck.sample_pairs(11, "random", seed=5))
  assert pck.sample_pairs(11, "random", num_pairs=23, seed=4).shape == (23, 2)
  fixed = np.array([[0, 1], [2, 3]])
  np.testing.assert_array_equal(pck.sample_pairs(4, "fixed", fixed, num_pairs=3), [[0, 1], [2, 3], [0, 1]])
  with pytest.raises(ValueError, match="fixed"):
    pck.sample_pairs(4, "fixed", None)


def test_mirroring_keypoints_is_an_involution_that_matches_flipped_renders():
  perm = synthetic.MIRROR_PERMUTATION
  k = np.random.default_rng(0).uniform(0, 31, (3, len(perm), 2))
  np.testing.assert_allclose(pck.mirror_keypoints(pck.mirror_keypoints(k, 32, perm), 32, perm), k)
  plain, mirrored = (synthetic.render(2, 1, 32, RenderOptions(occluder_prob=1.0), mirror=m) for m in (False, True))
  images = pck.flip_images(plain["image"][None], [True])
  keypoints, visibility = pck.flip_annotations(plain["keypoints"][None], plain["visibility"][None], [True], 32, perm)
  np.testing.assert_array_equal(images[0], mirrored["image"])
  np.testing.assert_allclose(keypoints[0], mirrored["keypoints"], atol=1e-4)
  np.testing.assert_array_equal(visibility[0], mirrored["visibility"])


def test_flip_inference_plugs_in_and_scores_mirrored_images_with_mirrored_annotations(synth):
  # Any flip decisions keep a perfect transfer perfect: mirroring + permutation is consistent with the data.
  rng = np.random.default_rng(0)
  random_flips = lambda images: rng.uniform(size=len(images)) < 0.5
  res = pck.pck_transfer(oracle(synth), synth, ALPHAS, flip_fn=random_flips, both_ways=True)
  assert all(res[pck.alpha_key(a)] == 1.0 for a in ALPHAS) and res["flip_inference"]
  # An aligner that only understands one orientation fails on mirrored images, and is fixed by flipping
  # exactly those first (GANgealing's TV test plays this role).
  naive = oracle(synth, ignore_mirroring=True)
  mirrored = {_key(im) for im, m in zip(synth["images"], synth["mirrored"]) if m}
  is_mirrored = lambda images: np.array([_key(im) in mirrored for im in images])
  assert pck.pck_transfer(naive, synth, [0.1])["pck@0.1"] < 0.9
  assert pck.pck_transfer(naive, synth, ALPHAS, flip_fn=is_mirrored)["pck@0.01"] == 1.0


def test_after_mirroring_one_image_the_mirrored_slots_visibility_counts():
  # Two key points, a left/right pair. A shows only its left one, B only its right one. Mirroring A makes
  # its visible point slot "right" (the mirror twin's right), which B shows: one key point is scored (upstream
  # would mask with the unmirrored slots, visA[i] * visB[i] = 0, and score none).
  ds = dict(
    images=np.zeros((2, 10, 10, 3), np.float32),
    keypoints=np.array([[(2, 5), (0, 0)], [(0, 0), (3, 5)]], float),
    visibility=np.array([[True, False], [False, True]]),
    pck_threshold=np.array([10.0, 10.0]),
    pairs=np.array([[0, 1]]),
    permutation=np.array([1, 0]),
  )
  seen = []

  def transfer(images_a, images_b, keypoints_a):
    seen.append(keypoints_a.copy())
    return keypoints_a - [4.0, 0.0]  # A's mirrored point (7, 5) -> B's right point (3, 5).

  decisions = iter([np.array([True]), np.array([False])])  # A is mirrored, B is not.
  res = pck.pck_transfer(transfer, ds, [0.1], flip_fn=lambda images: next(decisions))
  assert seen[0][0, 1].tolist() == [7.0, 5.0]  # Slot "right" of mirrored A: x = 9 - 2.
  assert res["num_keypoints"] == 1 and res["pck@0.1"] == 1.0
  # The same through a predictions file's flips (here as arrays).
  res = pck.evaluate_predictions(ds, [[0, 1]], [[(0.0, 0.0), (3.0, 5.0)]], [0.1], flips=[[True, False]])
  assert res["num_keypoints"] == 1 and res["pck@0.1"] == 1.0


def test_keypoint_dataset_objects_are_accepted(synth):
  class FakeKeypointDataset:  # The interface of jaxgeal.datasets.KeypointDataset that the evaluator uses.
    pairs, permutation, threshold, keypoint_names = synth["pairs"], synth["permutation"], "bbox", None

    def annotations(self):
      return {k: synth[k] for k in ("keypoints", "visibility", "bbox", "pck_threshold")}

    def __len__(self):
      return len(synth["images"])

    def __getitem__(self, i):
      return {"image": np.round((synth["images"][i] + 1) * 127.5).astype(np.uint8)}

  res = pck.pck_transfer(identity, FakeKeypointDataset(), ALPHAS)
  assert res == pck.pck_transfer(identity, synth, ALPHAS)


def test_annotations_json_round_trip_keeps_what_pck_needs(tmp_path):
  ds = hand_made()
  loaded = pck.load_annotations(pck.save_annotations(tmp_path / "a.json", ds))
  np.testing.assert_array_equal(loaded["visibility"], ds["visibility"])
  np.testing.assert_array_equal(loaded["keypoints"][ds["visibility"]], ds["keypoints"][ds["visibility"]])
  assert loaded["image_sizes"].tolist() == [[20, 20]] * 3 and "images" not in loaded
  for key in ("pck_threshold", "pairs", "permutation"):
    np.testing.assert_array_equal(loaded[key], ds[key])
  predicted = ds["keypoints"][ds["pairs"][:, 0]]  # The identity transfer, scored from files alone.
  assert pck.evaluate_predictions(loaded, ds["pairs"], predicted, ALPHAS) == pck.evaluate_predictions(
    ds, ds["pairs"], predicted, ALPHAS
  )
  assert pck.evaluate_predictions(loaded, ds["pairs"], predicted, [0.1])["pck@0.1"] == 0.6


def test_cli_scores_a_predictions_file(tmp_path, capsys):
  folder = synthetic.write_folder(tmp_path / "synth", n=6, size=32, seed=8).parent
  pairs_file = tmp_path / "pairs.json"
  assert (
    pck.main(
      [
        "--annotations",
        str(folder),
        "--write_pairs",
        str(pairs_file),
        "--pairs",
        "random",
        "--num_pck_pairs",
        "5",
        "--transfer_both_ways",
      ]
    )
    == 0
  )
  rows = np.array(json.loads(pairs_file.read_text())["pairs"])
  assert rows.shape == (10, 2)
  doc = json.loads((folder / "annotations.json").read_text())
  warps = [synthetic.Warp.from_json(e["warp"]) for e in doc["images"]]
  kps = synthetic.make_dataset(6, 32, seed=8)["keypoints"]
  predicted = np.stack([synthetic.transfer_points(warps[a], warps[b], kps[a]) for a, b in rows])
  pred_file = pck.save_predictions(tmp_path / "pred.npz", rows, predicted)
  out = tmp_path / "results.json"
  assert (
    pck.main(["--annotations", str(folder), "--predictions", str(pred_file), "--num_bootstrap", "5", "--out", str(out)])
    == 0
  )
  res = json.loads(out.read_text())
  assert res["pck@0.1"] == res["pck@0.01"] == 1.0 and res["pck@0.01_std"] == 0.0
  assert res["num_pairs"] == len({tuple(sorted(r)) for r in rows.tolist()})  # Distinct unordered pairs.
  assert "PCK-Transfer@0.1: 100.00%" in capsys.readouterr().err
  # A method that mirrored some images predicts in the mirrored targets' frames, and says so in 'flips'.
  flips = np.random.default_rng(1).uniform(size=rows.shape) < 0.5
  perm = synthetic.MIRROR_PERMUTATION
  flipped = lambda w, f: dataclasses.replace(w, mirrored=w.mirrored != f)
  predicted = np.stack(
    [
      synthetic.transfer_points(
        flipped(warps[a], fa), flipped(warps[b], fb), pck.mirror_keypoints(kps[a], 32, perm) if fa else kps[a]
      )
      for (a, b), (fa, fb) in zip(rows, flips)
    ]
  )
  pck.save_predictions(tmp_path / "flipped.npz", rows, predicted, flips)
  assert pck.main(["--annotations", str(folder), "--predictions", str(tmp_path / "flipped.npz")]) == 0
  assert json.loads(capsys.readouterr().out)["pck@0.01"] == 1.0
  # The same as JSON, with a key point the method gave up on (null): it counts as wrong.
  doc_pred = {"pairs": rows.tolist(), "keypoints": predicted.tolist()}
  doc_pred["keypoints"][0][4] = None
  (tmp_path / "pred.json").write_text(json.dumps(doc_pred))
  assert pck.main(["--annotations", str(folder), "--predictions", str(tmp_path / "pred.json")]) == 0
  assert json.loads(capsys.readouterr().out)["pck@0.1"] < 1.0


def test_cli_explains_bad_inputs(tmp_path, capsys):
  folder = synthetic.write_folder(tmp_path / "synth", n=3, size=16, seed=0).parent
  assert pck.main(["--annotations", str(folder), "--predictions", str(tmp_path / "missing.npz")]) == 2
  assert "no predictions file" in capsys.readouterr().err
  pck.save_predictions(tmp_path / "bad.npz", [[0, 1]], np.zeros((1, 4, 2)))
  assert pck.main(["--annotations", str(folder), "--predictions", str(tmp_path / "bad.npz")]) == 2
  assert "do not match" in capsys.readouterr().err
  assert pck.main(["--annotations", str(tmp_path), "--predictions", str(tmp_path / "bad.npz")]) == 2
  assert "no annotations file" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    pck.main(["--annotations", str(folder)])


def test_cli_help_runs_as_a_module():
  out = subprocess.run(
    [sys.executable, "-m", "jaxgeal.evaluation.pck", "--help"], capture_output=True, text=True, check=True
  )
  assert "--predictions" in out.stdout and "--num_bootstrap" in out.stdout and not out.stderr


def test_cli_never_writes_over_its_inputs_and_names_unwritable_outputs(tmp_path, capsys):
  folder = synthetic.write_folder(tmp_path / "synth", n=3, size=16, seed=0).parent
  annotations = (folder / "annotations.json").read_bytes()
  (tmp_path / "f").write_text("x")
  # Tests run as root (a chmod'd directory stays writable): the unwritable place is a path below a file.
  for argv, message in [
    (["--write_pairs", str(folder / "annotations.json")], "is the input"),
    (["--write_pairs", str(tmp_path / "f" / "pairs.json")], "is a file, not a directory"),
  ]:
    assert pck.main(["--annotations", str(folder)] + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and err.count("\n") == 1
  assert (folder / "annotations.json").read_bytes() == annotations
  with pytest.raises(SystemExit):
    pck.main(["--annotations", str(folder), "--write_pairs", "p.json", "--num_pck_pairs", "0"])
  assert "argument --num_pck_pairs: must be a positive integer" in capsys.readouterr().err
