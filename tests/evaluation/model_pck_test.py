"""Specification of `python -m jaxgeal.evaluation.pck --model DIR`: PCK-Transfer of a GANgealing model directory
(`jaxgeal.evaluation.model_pck`), the paper's protocol (§4.2, App. B.4, B.7) run end to end from files.

The model directories are the tiny STNs of tests/align: every image gets the same known similarity warp (the
head's bias), so congealing A's key points and uncongealing them into B is the identity transfer, whose PCK
`jaxgeal.evaluation.pck` computes independently.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image

from jaxgeal.align import Aligner
from jaxgeal.datasets import keypoints, spair, synthetic
from jaxgeal.evaluation import model_pck, pck
from tests.align.conftest import SIZE, make_model


@pytest.fixture(scope="module")
def sim_model(tmp_path_factory):
  return make_model(tmp_path_factory.mktemp("pck_sim") / "model", transforms=("similarity",))


@pytest.fixture(scope="module")
def flow_model(tmp_path_factory):
  return make_model(tmp_path_factory.mktemp("pck_flow") / "model", flow_random=True, seed=3)


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
  """Renders at half the models' input size (the CLI must resize them and scale the annotations)."""
  return synthetic.write_folder(
    tmp_path_factory.mktemp("renders"),
    n=8,
    size=SIZE // 2,
    seed=5,
    options=synthetic.RenderOptions(mirror_prob=0.5),
    num_pairs=10,
  ).parent


def test_a_constant_warp_transfers_like_the_identity_after_resizing(sim_model, renders, tmp_path, capsys):
  out = tmp_path / "pck.json"
  assert (
    pck.main(
      [
        "--model",
        str(sim_model),
        "--annotations",
        str(renders),
        "--alphas",
        "0.1",
        "0.05",
        "0.01",
        "--num_bootstrap",
        "4",
        "--out",
        str(out),
      ]
    )
    == 0
  )
  res = json.loads(out.read_text())
  # The same protocol on the original 32 px annotations, transferring by identity: errors and thresholds both
  # scale by 2 under the resize, so every key point is judged the same way.
  want = pck.pck_transfer(lambda a, b, k: k, pck.load_annotations(renders, load_images=True), num_bootstrap=4)
  for a in ("0.1", "0.05", "0.01"):
    assert res[f"pck@{a}"] == pytest.approx(want[f"pck@{a}"], abs=1e-9)
  assert 0.0 < res["pck@0.1"] < 1.0 and res["pck@0.1_std"] > 0.0
  assert res["num_pairs"] == 10 and res["pairs"] == "fixed" and res["threshold"] == "bbox"
  assert res["model_settings"]["input_size"] == SIZE and res["model_settings"]["transforms"] == ["similarity"]
  assert res["model"] == str(sim_model) and json.loads(capsys.readouterr().out) == res


def test_flip_inference_mirrors_what_the_aligner_mirrors(flow_model, renders):
  aligner = Aligner.load(flow_model)
  ds = model_pck.fit_to_model(pck.load_annotations(renders, load_images=True), SIZE)
  flipped = aligner.congeal(ds["images"])["flipped"]
  assert 0 < flipped.sum() < len(flipped)  # Both branches of the flip are exercised.
  res = model_pck.evaluate_model(aligner, ds)
  assert res["flip_inference"] and res["model_settings"]["flip"]
  # Independently: mirror exactly the images the aligner mirrors, then transfer without flipping again.
  plain = Aligner.load(flow_model, flip=False)
  want = pck.pck_transfer(plain.transfer_points, ds, flip_fn=lambda im: aligner.congeal(im)["flipped"])
  assert res["pck@0.1"] == want["pck@0.1"] and res["pck@0.05"] == want["pck@0.05"]
  off = model_pck.evaluate_model(aligner, ds, flip=False)
  assert not off["flip_inference"] and not off["model_settings"]["flip"]


def test_random_pairs_both_ways_for_cub_style_datasets(sim_model, renders):
  ds = pck.load_annotations(renders, load_images=True)
  res = model_pck.evaluate_model(
    Aligner.load(sim_model), ds, pairs="random", num_pairs=6, both_ways=True, threshold="image", progress=True
  )
  assert res["pairs"] == "random" and res["both_ways"] and res["num_pairs"] == 6 and res["threshold"] == "image"
  want = pck.pck_transfer(lambda a, b, k: k, ds, pairs="random", num_pairs=6, both_ways=True, threshold="image")
  assert res["pck@0.05"] == pytest.approx(want["pck@0.05"], abs=1e-9)


def test_bad_inputs_are_named(sim_model, renders, tmp_path, capsys):
  assert pck.main(["--model", str(tmp_path / "nope"), "--annotations", str(renders)]) == 2
  assert "does not exist" in capsys.readouterr().err
  # A non-square image: the model cannot take it without a prepared (padded / cropped) dataset.
  doc = json.loads((renders / "annotations.json").read_text())
  Image.new("RGB", (40, 30)).save(tmp_path / "wide.png")
  doc["images"][3]["file"] = "wide.png"
  for e in doc["images"]:
    if e["file"] != "wide.png":
      e["file"] = str(renders / e["file"])
  (tmp_path / "annotations.json").write_text(json.dumps(doc))
  assert pck.main(["--model", str(sim_model), "--annotations", str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert "wide.png is 30x40" in err and "jaxgeal.datasets.prepare" in err
  (tmp_path / "wide.png").write_bytes(b"not a png")
  assert pck.main(["--model", str(sim_model), "--annotations", str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert "cannot read image" in err and "wide.png" in err
  with pytest.raises(SystemExit):  # --dataset only runs models.
    pck.main(["--dataset", str(renders), "--predictions", "p.npz"])
  with pytest.raises(SystemExit):  # One of the three modes.
    pck.main(["--annotations", str(renders), "--model", str(sim_model), "--predictions", "p.npz"])


def test_a_prepared_spair_style_dataset_runs_from_its_records(sim_model, tmp_path, capsys):
  from tests.datasets import fakes, spair_test  # pylint: disable=g-import-not-at-top

  tree = fakes.make_spair(
    tmp_path / "SPair-71k", "cat", 18, spair_test.IMAGES, [spair_test.PAIR_AB, spair_test.PAIR_BC]
  )
  report = spair.build_spair(tree, tmp_path / "out", "cat", "test", size=SIZE // 2)
  out = tmp_path / "pck.json"
  assert pck.main(["--model", str(sim_model), "--dataset", str(report.path), "--out", str(out)]) == 0
  res = json.loads(out.read_text())
  want = pck.pck_transfer(lambda a, b, k: k, keypoints.open_keypoint_dataset(report.path))
  assert res["num_pairs"] == 2 and res["threshold"] == "bbox" and res["dataset"] == str(report.path)
  for a in ("0.1", "0.05", "0.01"):
    assert res[f"pck@{a}"] == pytest.approx(want[f"pck@{a}"], abs=1e-9)
  capsys.readouterr()
