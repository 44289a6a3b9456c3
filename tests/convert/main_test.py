"""`python -m jaxgeal.convert`: an OUT_DIR that is (or holds) the checkpoint, or lies below a file, is refused in
one line before anything is read or written; bad numbers stop the parser."""

import pytest

from jaxgeal.convert import __main__ as convert_cli


@pytest.mark.parametrize("what", ["stylegan2", "gangealing", "lpips", "swapae"])
def test_out_dir_never_replaces_the_checkpoint(tmp_path, capsys, what):
  src = tmp_path / "variables"
  src.write_bytes(b"checkpoint")
  (tmp_path / "f").write_text("x")
  # Tests run as root (a chmod'd directory stays writable): the unwritable place is a path below a file.
  for out, message in [
    (src, "is a file, not a directory"),
    (tmp_path, "is the input"),
    (tmp_path / "f" / "model", "is a file, not a directory"),
  ]:
    assert convert_cli.main([what, str(src), str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and err.count("\n") == 1, err
  assert src.read_bytes() == b"checkpoint"


def test_bad_numbers_are_rejected_by_the_parser(capsys):
  with pytest.raises(SystemExit):
    convert_cli.main(["gangealing", "a.pt", "out", "--inject", "-1"])
  assert "argument --inject: must be an integer >= 0" in capsys.readouterr().err
