"""`python -m jaxgeal.sample`: bad numbers stop the parser; an --out over the model or below a file is one line."""

import pytest

from jaxgeal import sample


@pytest.mark.parametrize("flag", ["--batch_size", "--n_mean", "--nrow"])
@pytest.mark.parametrize("value", ["0", "-2"])
def test_non_positive_numbers_are_rejected_by_the_parser(flag, value, capsys):
  with pytest.raises(SystemExit) as e:
    sample.main(["--checkpoint", "m", flag, value])
  assert e.value.code == 2 and f"argument {flag}: must be a positive integer" in capsys.readouterr().err


def test_out_over_the_model_or_below_a_file_is_refused(tmp_path, capsys):
  model = tmp_path / "model"
  model.mkdir()
  (model / "model.json").write_text("{}")
  # Tests run as root (a chmod'd directory stays writable): the unwritable place is a path below a file.
  for out, message in [
    (model / "model.json", "is the input"),
    (model / "model.json" / "grid.png", "is a file, not a directory"),
  ]:
    assert sample.main(["--checkpoint", str(model), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and err.count("\n") == 1
  assert (model / "model.json").read_text() == "{}"
