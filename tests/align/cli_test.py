"""CLI: every subcommand has --help, a missing model is a clear error, congeal/propagate/correspond run."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxgeal.align import __main__ as cli

COMMANDS = ["congeal", "correspond", "flow-scores", "congeal-dataset", "propagate", "video"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main([command, "--help"])
  assert e.value.code == 0 and "--model" in capsys.readouterr().out


def test_missing_model_is_clear(tmp_path, capsys):
  img = tmp_path / "a.png"
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
  for command in ["congeal", "flow-scores", "congeal-dataset"]:
    assert cli.main([command, "--model", str(tmp_path / "missing"), "--input", str(img), "--out",
                     str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "does not exist" in err and "jaxgeal.convert" in err


def test_module_entry_point():
  r = subprocess.run([sys.executable, "-m", "jaxgeal.align", "--help"], capture_output=True, text=True)
  assert r.returncode == 0 and "congeal-dataset" in r.stdout


def test_congeal_propagate_correspond(model_dir, tmp_path, capsys):
  inp = tmp_path / "in"
  inp.mkdir()
  rng = np.random.RandomState(0)
  for i in range(3):  # Different sizes: resized with a note.
    Image.fromarray(rng.randint(0, 255, (64 + 16 * (i == 2), 64, 3), np.uint8)).save(inp / f"im{i}.png")
  (inp / "bad.png").write_bytes(b"not an image")
  assert cli.main(["congeal", "--model", str(model_dir), "--input", str(inp), "--out", str(tmp_path / "o")]) == 2
  assert "bad.png" in capsys.readouterr().err
  (inp / "bad.png").unlink()
  out = tmp_path / "congealed"
  assert cli.main(["congeal", "--model", str(model_dir), "--input", str(inp), "--out", str(out),
                   "--batch", "3"]) == 0
  assert "resized 1" in capsys.readouterr().err
  assert sorted(p.name for p in out.glob("*.png")) == ["average.png", "im0.png", "im1.png", "im2.png"]
  label = np.zeros((64, 64, 4), np.uint8)
  label[30:34, 30:34] = (0, 255, 0, 255)
  Image.fromarray(label).save(tmp_path / "label.png")
  assert cli.main(["propagate", "--model", str(model_dir), "--input", str(inp), "--label",
                   str(tmp_path / "label.png"), "--out", str(tmp_path / "prop"), "--batch", "3"]) == 0
  assert len(list((tmp_path / "prop").glob("*.png"))) == 3
  (tmp_path / "pa.json").write_text(json.dumps([[20, 30], [40, 25]]))
  assert cli.main(["correspond", "--model", str(model_dir), "--image-a", str(inp / "im0.png"), "--image-b",
                   str(inp / "im1.png"), "--points-a", str(tmp_path / "pa.json"), "--out",
                   str(tmp_path / "corr"), "--dense"]) == 0
  pb = np.array(json.loads((tmp_path / "corr" / "points_b.json").read_text()))
  np.testing.assert_allclose(pb, [[20, 30], [40, 25]], atol=1e-2)  # Same warp for both images.
  assert (tmp_path / "corr" / "correspondences.png").exists()
  assert np.load(tmp_path / "corr" / "dense_flow_a_to_b.npy").shape == (64, 64, 2)
