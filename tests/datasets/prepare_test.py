"""Specification of the `python -m jaxgeal.datasets.prepare` command line."""
from __future__ import annotations

import subprocess
import sys

import pytest

from jaxgeal.datasets import prepare, reader
from tests.datasets import fakes


def test_help_lists_the_dataset_kinds():
  out = subprocess.run([sys.executable, "-m", "jaxgeal.datasets.prepare", "--help"], capture_output=True,
                       text=True, check=True).stdout
  for kind in ("folder", "lsun", "spair", "cub"):
    assert kind in out


def test_subcommand_help_documents_the_expected_layout(capsys):
  with pytest.raises(SystemExit) as exit_info:
    prepare.main(["spair", "--help"])
  assert exit_info.value.code == 0
  out = capsys.readouterr().out
  assert "PairAnnotation" in out and "--spair_category" in out and "--pad" in out


def test_each_size_becomes_one_dataset(tmp_path, capsys):
  for i in range(3):
    fakes.write_image(tmp_path / "src" / f"{i}.png", fakes.solid(8, 12, 40 * i))
  code = prepare.main(["folder", "--path", str(tmp_path / "src"), "--out", str(tmp_path / "out"),
                       "--size", "8,4", "--pad", "zero"])
  assert code == 0
  assert "train: 3 examples" in capsys.readouterr().out
  for size in (8, 4):
    source = reader.open_dataset(tmp_path / "out" / "jaxgeal_image_folder" / f"{size}_zero")
    assert source[0]["image"].shape == (size, size, 3)


@pytest.mark.parametrize("argv,message", [
    (["folder", "--path", "{tmp}/nowhere", "--out", "{tmp}/out"], "does not exist"),
    (["folder", "--path", "{tmp}/empty", "--out", "{tmp}/out"], "no images"),
    (["folder", "--path", "{tmp}/text", "--out", "{tmp}/out"], "no images"),
    (["cub", "--path", "{tmp}/text", "--out", "{tmp}/out", "--cub_acsm"], "acsm_mat"),
    (["spair", "--path", "{tmp}/text", "--out", "{tmp}/out", "--spair_category", "cat"], "SPair-71k"),
])
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
