"""benchmarks/alignment.py: each ablation changes only what it names, and the report lists every method with
its PCK and bootstrap deviation (the full run trains four aligners: it is a benchmark, not a test)."""

import json

import numpy as np
import pytest

from benchmarks import alignment as bench


def test_ablations_change_only_what_they_name():
  base = bench.load_config("configs/demo.py")
  for _, subdir, overrides in bench.METHODS:
    if subdir is None:
      continue
    c = bench.with_overrides(base, overrides)
    as_dict = lambda v: v.to_dict() if hasattr(v, "to_dict") else v
    changed = {k for k in base.gangealing if as_dict(c.gangealing[k]) != as_dict(base.gangealing[k])}
    assert changed == {k.split(".")[0] for k in overrides}, subdir
    assert c.stylegan2.to_dict() == base.stylegan2.to_dict() and c.data.to_dict() == base.data.to_dict()
  assert base.gangealing.ll.freeze is False  # with_overrides copies: the base is untouched


def test_report_lists_every_method(tmp_path):
  config = bench.load_config("configs/demo.py")
  rows = [
    (
      name,
      {
        "pck@0.1": 0.5,
        "pck@0.1_std": 0.01,
        "pck@0.05": 0.2,
        "pck@0.05_std": 0.01,
        "pck@0.01": 0.01,
        "pck@0.01_std": 0.001,
      },
    )
    for name in [m[0] for m in bench.METHODS] + [bench.ORACLE]
  ]
  out = tmp_path / "alignment.md"
  bench.write_report(out, config, rows, {"data + generator": 1.0}, "python benchmarks/alignment.py")
  text = out.read_text()
  for name in [m[0] for m in bench.METHODS] + [bench.ORACLE]:
    assert f"| {name} | 0.500 ± 0.010 | 0.200 ± 0.010 | 0.010 ± 0.001 | - |" in text
  assert "lcn" in text and out.with_suffix(".json").exists()


def test_target_offset_counts_standard_deviations_of_w_along_the_learners_directions():
  rng = np.random.default_rng(0)
  directions = np.linalg.qr(rng.standard_normal((8, 3)))[0].T  # 3 orthonormal directions in 8-d W
  w = rng.standard_normal((20000, 3)) * [4.0, 1.0, 0.25] @ directions + rng.standard_normal((20000, 8)) * 1e-3
  assert bench.target_offset(np.zeros((1, 3)), directions, w) == 0.0  # fixed c: still at the mean
  # 2 std along the widest direction is as far as 2 std along the narrowest; the largest head is reported.
  assert bench.target_offset([[8.0, 0, 0]], directions, w) == pytest.approx(2.0, rel=0.02)
  assert bench.target_offset([[0, 0, 0.5], [0, 1.0, 0]], directions, w) == pytest.approx(2.0, rel=0.02)
  assert bench.target_offset([[4.0, 0, 0.25]], directions, w) == pytest.approx(np.sqrt(2.0), rel=0.02)


def test_the_ground_truth_similarity_transfer_is_exact_without_deformation():
  from jaxgeal.datasets import synthetic
  from jaxgeal.evaluation import pck

  rigid = synthetic.make_dataset(6, 32, 5, synthetic.RenderOptions(deformation=0.0, mirror_prob=0.0), num_pairs=10)
  res = pck.pck_transfer(bench.ground_truth_similarity_transfer(rigid), rigid, pairs="fixed")
  assert res["pck@0.01"] == 1.0
  bent = synthetic.make_dataset(6, 32, 5, synthetic.RenderOptions(deformation=0.3, mirror_prob=0.0), num_pairs=10)
  assert pck.pck_transfer(bench.ground_truth_similarity_transfer(bent), bent, pairs="fixed")["pck@0.01"] < 1.0


def test_pose_left_is_zero_for_the_renderers_own_similarity_and_its_spread_for_none():
  from jaxgeal.datasets import synthetic
  from jaxgeal.ops import points as pts

  ds = synthetic.make_dataset(6, 32, 8, synthetic.RenderOptions(deformation=0.2, mirror_prob=0.0), num_pairs=4)
  n = len(ds["images"])
  # The ideal similarity STN: congealed normalised u -> canonical q = 3 u -> this image's pixels -> normalised.
  u = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
  mats = []
  for w in ds["warps"]:
    x = np.asarray(pts.normalize_points(bench.rigid(w).to_image(3.0 * u), 32, 32))
    mats.append(np.linalg.lstsq(np.c_[u, np.ones(3)], x, rcond=None)[0].T)
  ideal = bench.pose_left(np.stack(mats), ds)
  assert max(ideal.values()) < 1e-6, ideal
  none = bench.pose_left(np.broadcast_to(np.eye(2, 3), (n, 2, 3)), ds)
  angles = np.rad2deg([w.angle for w in ds["warps"]])
  np.testing.assert_allclose(none["angle_left_deg"], angles.std(), rtol=1e-6)
  np.testing.assert_allclose(none["log_scale_left"], np.log([w.scale for w in ds["warps"]]).std(), rtol=1e-6)
  assert none["shift_left_px"] > 0.1


def test_training_seconds_skip_the_time_between_an_interruption_and_its_resume(tmp_path):
  rows = [
    dict(step=100, time=10.0, steps_per_s=10.0),
    dict(step=200, time=20.0, steps_per_s=10.0),
    dict(step=300, time=30.0, steps_per_s=10.0),  # killed after this row, resumed from step 200:
    dict(step=300, time=5000.0, steps_per_s=5.0),
    dict(step=400, time=5020.0, steps_per_s=5.0),
  ]
  path = tmp_path / "metrics.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  assert bench.training_seconds(path) == 10 + 10 + 20 + 20


def test_methods_selects_stages_and_rejects_unknown_ones(tmp_path, monkeypatch):
  seen = {}
  monkeypatch.setattr(bench, "run", lambda config, workdir, methods: (seen.update(methods=methods), ([], {}))[1])
  monkeypatch.setattr(
    bench,
    "write_report",
    lambda path, config, rows, seconds, command: (seen.update(command=command), path.write_text("report")),
  )
  out = tmp_path / "complex.md"
  bench.main(
    [
      "--workdir",
      str(tmp_path),
      "--config",
      "configs/demo.py:complex",
      "--methods",
      "flow,flow_fixed_c",
      "--out",
      str(out),
    ]
  )
  assert seen["methods"] == ["flow", "flow_fixed_c"]
  assert seen["command"] == (
    f"python benchmarks/alignment.py --config configs/demo.py:complex --methods flow,flow_fixed_c --out {out.resolve()}"
  )
  for bad in ("flow,sideways", "flow@one"):
    with pytest.raises(SystemExit):
      bench.main(["--workdir", str(tmp_path), "--methods", bad])


def test_another_seed_of_a_stage_is_its_own_row_and_directory():
  rows = bench.selected(["flow_fixed_c", "flow_fixed_c@1"])
  assert [r[1] for r in rows] == [None, "flow_fixed_c", "flow_fixed_c_seed1"]
  assert rows[2][0] == "similarity + flow, fixed c, seed 1"
  assert rows[2][2] == {"ll.freeze": True, "seed": 1} and rows[1][2] == {"ll.freeze": True}
  config = bench.with_overrides(bench.load_config("configs/demo.py"), rows[2][2])
  assert config.gangealing.seed == 1 and config.gangealing.ll.freeze
  assert bench.selected(None) == list(bench.METHODS)
