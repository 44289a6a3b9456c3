"""Specification of the `python -m jaxgeal.datasets.prepare` command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jaxgeal.datasets import prepare, reader
from tests.datasets import fakes


def test_help_lists_the_dataset_kinds():
  out = subprocess.run(
    [sys.executable, "-m", "jaxgeal.datasets.prepare", "--help"], capture_output=True, text=True, check=True
  ).stdout
  for kind in ("folder", "lsun", "spair", "cub"):
    assert kind in out


def test_subcommand_help_documents_the_expected_layout(capsys):
  with pytest.raises(SystemExit) as exit_info:
    prepare.main(["spair", "--help"])
  assert exit_info.value.code == 0
  out = capsys.readouterr().out
  assert "PairAnnotation" in out and "--category" in out and "--pad" in out


def test_each_size_becomes_one_dataset(tmp_path, capsys):
  for i in range(3):
    fakes.write_image(tmp_path / "src" / f"{i}.png", fakes.solid(8, 12, 40 * i))
  code = prepare.main(
    ["folder", "--path", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--size", "8,4", "--pad", "zero"]
  )
  assert code == 0
  assert "train: 3 examples" in capsys.readouterr().out
  for size in (8, 4):
    source = reader.open_dataset(tmp_path / "out" / "jaxgeal_image_folder" / f"{size}_zero")
    assert source[0]["image"].shape == (size, size, 3)


@pytest.mark.parametrize(
  "argv,message",
  [
    (["folder", "--path", "{tmp}/nowhere", "--out", "{tmp}/out"], "does not exist"),
    (["folder", "--path", "{tmp}/empty", "--out", "{tmp}/out"], "no images"),
    (["folder", "--path", "{tmp}/text", "--out", "{tmp}/out"], "no images"),
    (["cub", "--path", "{tmp}/text", "--out", "{tmp}/out", "--cub_acsm"], "acsm_mat"),
    (["spair", "--path", "{tmp}/text", "--out", "{tmp}/out", "--category", "cat"], "SPair-71k"),
  ],
)
def test_bad_input_is_a_one_line_error_not_a_traceback(tmp_path, capsys, argv, message):
  (tmp_path / "empty").mkdir()
  (tmp_path / "text").mkdir()
  (tmp_path / "text" / "readme.txt").write_text("no images here")
  code = prepare.main([a.format(tmp=tmp_path) for a in argv])
  err = capsys.readouterr().err
  assert code == 1 and err.startswith("error:") and message in err and "Traceback" not in err


def test_bad_sizes_are_rejected_by_the_parser(capsys):
  with pytest.raises(SystemExit):
    prepare.main(["folder", "--path", "x", "--out", "y", "--size", "big"])
  assert "--size" in capsys.readouterr().err


def _tree(path):
  return sorted((p.relative_to(path).as_posix(), p.read_bytes() if p.is_file() else None) for p in path.rglob("*"))


def test_too_many_bad_images_names_them_all_and_leaves_nothing_behind(tmp_path, capsys):
  fakes.write_image(tmp_path / "src" / "good.png", fakes.solid(8, 8, 10))
  for i in range(3):
    (tmp_path / "src" / f"bad{i}.png").write_bytes(b"not an image")
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "mine.txt").write_text("the user's file")
  before = _tree(tmp_path / "out")
  code = prepare.main(["folder", "--path", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--size", "8"])
  err = capsys.readouterr().err
  assert code == 1 and "Traceback" not in err
  assert "3 of 4 images are unreadable" in err and all(f"bad{i}.png" in err for i in range(3))
  assert _tree(tmp_path / "out") == before  # No empty dataset directories; the user's file untouched.
  code = prepare.main(["folder", "--path", str(tmp_path / "src"), "--out", str(tmp_path / "new"), "--size", "8"])
  assert code == 1 and not (tmp_path / "new").exists()


def test_more_than_ten_bad_images_are_counted_and_the_first_ten_named(tmp_path, capsys):
  for i in range(12):
    (tmp_path / "src" / f"bad{i:02d}.png").parent.mkdir(exist_ok=True)
    (tmp_path / "src" / f"bad{i:02d}.png").write_bytes(b"x")
  assert prepare.main(["folder", "--path", str(tmp_path / "src"), "--out", str(tmp_path / "out")]) == 1
  err = capsys.readouterr().err
  assert "12 of 12 images" in err and "bad09.png" in err and "bad10.png" not in err and "2 more" in err


def test_an_output_below_a_file_is_one_line_naming_it(tmp_path, capsys):
  # Tests run as root (a chmod'd directory stays writable), so the unwritable place is a path below a file.
  fakes.write_image(tmp_path / "src" / "a.png", fakes.solid(8, 8, 10))
  (tmp_path / "file").write_text("x")
  for out in (tmp_path / "file", tmp_path / "file" / "sub"):
    code = prepare.main(["folder", "--path", str(tmp_path / "src"), "--out", str(out), "--size", "8"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert f"{tmp_path / 'file'} is a file, not a directory" in err
  assert (tmp_path / "file").read_text() == "x"


@pytest.mark.parametrize("flag,value", [("--max_images", "0"), ("--num_workers", "0"), ("--max_bad_fraction", "2")])
def test_bad_numbers_are_rejected_by_the_parser(capsys, flag, value):
  with pytest.raises(SystemExit):
    prepare.main(["folder", "--path", "x", "--out", "y", flag, value])
  assert f"argument {flag}" in capsys.readouterr().err
