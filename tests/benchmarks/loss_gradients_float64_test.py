"""benchmarks/loss_gradients_float64.py: errors are relative to the float64 value's largest magnitude, and the
report has one row per output (the full run takes minutes per fixture; the parity test covers its computation)."""

import numpy as np
import pytest

from benchmarks import loss_gradients_float64 as bench


def test_errors_are_max_abs_relative_to_the_reference_magnitude():
  reference = np.array([[-4.0, 1.0], [2.0, 0.5]])
  value = reference + np.array([[0.0, 0.02], [-0.01, 0.0]])
  assert bench.relative_error(value, reference) == pytest.approx(0.02 / 4.0)
  assert bench.relative_error(np.zeros(3), np.zeros(3)) == 0.0  # an all-zero output is not a division by zero


def test_report_has_a_row_per_output():
  rows = [
    {
      "fixture": "multihead/losses_gangealing",
      "output": name,
      "loss": "clustering",
      "upstream_vs_float64": 1.3e-3,
      "ours_vs_float64": 8.8e-5,
      "ours_vs_upstream": 1.3e-3,
    }
    for name in ("cl_mse_grad__stns.1.warp_head.flow_out.2.weight", "cl_mse_total")
  ]
  md = bench.markdown(rows, "python benchmarks/loss_gradients_float64.py")
  assert md.count("| multihead/losses_gangealing |") == 2
  assert "| cl_mse_grad__stns.1.warp_head.flow_out.2.weight | clustering | 1.3e-03 | 8.8e-05 | 1.3e-03 |" in md


def test_an_out_it_cannot_write_is_one_line_before_any_work(tmp_path):
  fixtures = tmp_path / "fixtures"
  fixtures.mkdir()
  assert bench.check_out(None, fixtures) is None
  assert bench.check_out(str(tmp_path / "report.md"), fixtures) is None
  assert bench.check_out(str(tmp_path / "no" / "report.md"), fixtures) == (
    f"--out {tmp_path / 'no' / 'report.md'}: folder {tmp_path / 'no'} does not exist"
  )
  assert "inside the fixture directory" in bench.check_out(str(fixtures / "losses_gangealing.json"), fixtures)
  with pytest.raises(SystemExit, match="does not exist"):
    bench.main(["--out", str(tmp_path / "no" / "report.md")])
