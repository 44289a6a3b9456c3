"""jaxgeal.cli: number arguments fail in the parser, outputs never overwrite inputs, every input gets its own output
name, OS errors are one line; `python -m jaxgeal.main` names a --workdir that cannot be a directory."""

import argparse
import os
import subprocess
import sys

import pytest

from jaxgeal import cli


@pytest.mark.parametrize(
  "fn,good,bad",
  [
    (cli.positive_int, ["1", "32"], ["0", "-3", "1.5", "x"]),
    (cli.nonnegative_int, ["0", "7"], ["-1", "x"]),
    (cli.positive_float, ["0.5", "24"], ["0", "-1", "nan", "inf", "x"]),
    (cli.nonnegative_float, ["0", "1.3"], ["-0.1", "nan"]),
    (cli.fraction, ["0", "0.25", "1"], ["-0.1", "1.01", "nan"]),
    (cli.at_least(2), ["2", "48"], ["1", "0"]),
  ],
)
def test_number_types_accept_valid_values_and_reject_the_rest(fn, good, bad):
  for text in good:
    assert fn(text) == float(text)
  for text in bad:
    with pytest.raises(argparse.ArgumentTypeError, match="must be"):
      fn(text)


def test_number_type_message_names_the_argument(capsys):
  p = argparse.ArgumentParser()
  p.add_argument("--batch_size", type=cli.positive_int)
  with pytest.raises(SystemExit) as e:
    p.parse_args(["--batch_size", "0"])
  assert e.value.code == 2
  assert "argument --batch_size: must be a positive integer, got '0'" in capsys.readouterr().err


def test_an_output_that_is_an_input_is_refused_however_it_is_spelled(tmp_path, monkeypatch):
  src = tmp_path / "in.png"
  src.write_bytes(b"data")
  (tmp_path / "link.png").symlink_to(src)
  os.link(src, tmp_path / "hard.png")
  monkeypatch.chdir(tmp_path)
  for out in [src, "in.png", "./sub/../in.png", tmp_path / "link.png", tmp_path / "hard.png"]:
    if "sub" in str(out):
      (tmp_path / "sub").mkdir(exist_ok=True)
    with pytest.raises(cli.UsageError, match="is the input"):
      cli.check_outputs([out], [src])
  cli.check_outputs([tmp_path / "other.png", tmp_path / "new" / "in.png"], [src])  # Different files: fine.
  assert src.read_bytes() == b"data"


def test_an_output_directory_holding_an_input_is_refused(tmp_path):
  (tmp_path / "model").mkdir()
  (tmp_path / "model" / "model.json").write_text("{}")
  with pytest.raises(cli.UsageError, match="holds the input"):
    cli.check_outputs([tmp_path / "model"], [tmp_path / "model" / "model.json"])


def test_two_outputs_at_one_path_are_refused(tmp_path):
  with pytest.raises(cli.UsageError, match="two outputs"):
    cli.check_outputs([tmp_path / "a.png", tmp_path / "x" / ".." / "a.png"], [])


def test_output_names_keep_stems_unless_they_collide():
  assert cli.output_names(["d/cat.jpg", "d/dog.png"]) == ["cat", "dog"]
  assert cli.output_names(["d/cat.jpg", "d/cat.png", "d/dog.png"]) == ["cat.jpg", "cat.png", "dog"]
  # A stem equal to another input's whole name, or to a reserved output name, also keeps its whole name.
  assert cli.output_names(["d/cat.jpg", "d/cat.png", "d/cat.jpg.png"]) == ["cat.jpg", "cat.png", "cat.jpg.png"]
  assert cli.output_names(["d/average.png", "d/b.png"], reserved=["average"]) == ["average.png", "b"]
  names = cli.output_names(["d/a.JPG", "d/a.jpg", "d/a.png", "d/a.jpg.png", "d/b.png"])
  assert len(set(names)) == 5


def test_output_dir_with_a_file_in_the_way_is_refused(tmp_path):
  (tmp_path / "file").write_text("x")
  with pytest.raises(cli.UsageError, match="is a file, not a directory"):
    cli.check_output_dir(tmp_path / "file")
  with pytest.raises(cli.UsageError, match=f"{tmp_path / 'file'} is a file"):
    cli.check_output_dir(tmp_path / "file" / "sub" / "dir")
  with pytest.raises(cli.UsageError, match="is a directory, not a file"):
    cli.check_output_file(tmp_path)
  cli.check_output_dir(tmp_path / "new" / "dir")  # Creatable: fine.


def test_error_line_names_the_path():
  assert cli.error_line(PermissionError(13, "Permission denied", "/ro/out")) == "/ro/out: Permission denied"
  assert cli.error_line(ValueError("bad value")) == "bad value"
  assert cli.error_line(KeyError("no key 'g_ema'")) == "no key 'g_ema'"


def test_main_names_a_workdir_below_a_file(tmp_path):
  # Tests run as root, where a chmod'd read-only directory is still writable: a path below a regular file is
  # the unwritable directory here.
  (tmp_path / "file").write_text("x")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  r = subprocess.run(
    [sys.executable, "-m", "jaxgeal.main", f"--config={root}/configs/demo.py", f"--workdir={tmp_path / 'file' / 'wd'}"],
    capture_output=True,
    text=True,
    cwd=root,
  )
  assert r.returncode == 2, r.stderr[-2000:]
  assert "Traceback" not in r.stderr
  assert f"error: --workdir {tmp_path / 'file' / 'wd'}: {tmp_path / 'file'} is a file, not a directory" in r.stderr
