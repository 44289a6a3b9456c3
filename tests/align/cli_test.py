"""CLI: every subcommand has --help, a missing model is a clear error, congeal/propagate/correspond/animate/video
run, with Laplacian blending, saved correspondences and flow images on request."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxgeal.align import __main__ as cli

COMMANDS = ["congeal", "correspond", "flow-scores", "congeal-dataset", "propagate", "video", "animate"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main([command, "--help"])
  out = capsys.readouterr().out
  assert e.value.code == 0 and "--model" in out
  if command in ("propagate", "video"):
    assert "--blend {alpha,laplacian}" in out
  if command == "video":
    assert "--save_correspondences" in out
  if command in ("animate", "congeal"):
    assert "--flow_image" in out


def test_missing_model_is_clear(tmp_path, capsys):
  img = tmp_path / "a.png"
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
  for command in ["congeal", "flow-scores", "congeal-dataset", "animate"]:
    assert (
      cli.main([command, "--model", str(tmp_path / "missing"), "--input", str(img), "--out", str(tmp_path / "o")]) == 2
    )
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
  assert (
    cli.main(["congeal", "--model", str(model_dir), "--input", str(inp), "--out", str(out), "--batch_size", "3"]) == 0
  )
  assert "resized 1" in capsys.readouterr().err
  assert sorted(p.name for p in out.glob("*.png")) == ["average.png", "im0.png", "im1.png", "im2.png"]
  label = np.zeros((64, 64, 4), np.uint8)
  label[30:34, 30:34] = (0, 255, 0, 255)
  Image.fromarray(label).save(tmp_path / "label.png")
  assert (
    cli.main(
      [
        "propagate",
        "--model",
        str(model_dir),
        "--input",
        str(inp),
        "--label",
        str(tmp_path / "label.png"),
        "--out",
        str(tmp_path / "prop"),
        "--batch_size",
        "3",
      ]
    )
    == 0
  )
  assert len(list((tmp_path / "prop").glob("*.png"))) == 3
  (tmp_path / "pa.json").write_text(json.dumps([[20, 30], [40, 25]]))
  assert (
    cli.main(
      [
        "correspond",
        "--model",
        str(model_dir),
        "--image_a",
        str(inp / "im0.png"),
        "--image_b",
        str(inp / "im1.png"),
        "--points_a",
        str(tmp_path / "pa.json"),
        "--out",
        str(tmp_path / "corr"),
        "--dense",
      ]
    )
    == 0
  )
  pb = np.array(json.loads((tmp_path / "corr" / "points_b.json").read_text()))
  np.testing.assert_allclose(pb, [[20, 30], [40, 25]], atol=1e-2)  # Same warp for both images.
  assert (tmp_path / "corr" / "correspondences.png").exists()
  assert np.load(tmp_path / "corr" / "dense_flow_a_to_b.npy").shape == (64, 64, 2)


def _write_images(d, n=2, seed=1):
  d.mkdir()
  rng = np.random.RandomState(seed)
  for i in range(n):
    Image.fromarray(rng.randint(0, 255, (64, 64, 3), np.uint8)).save(d / f"im{i}.png")
  return d


def test_animate_and_flow_images(model_dir, tmp_path, capsys):
  import imageio.v2 as imageio

  inp = _write_images(tmp_path / "in")
  out = tmp_path / "anim"
  assert (
    cli.main(
      [
        "animate",
        "--model",
        str(model_dir),
        "--input",
        str(inp),
        "--out",
        str(out),
        "--frames",
        "3",
        "--hold",
        "0",
        "--flow_image",
      ]
    )
    == 0
  )
  assert sorted(p.name for p in out.iterdir()) == ["im0.mp4", "im0_flow.png", "im1.mp4", "im1_flow.png"]
  assert len([f for f in imageio.get_reader(str(out / "im0.mp4"))]) == 3
  assert np.asarray(Image.open(out / "im0_flow.png")).shape == (64, 64, 3)
  assert (
    cli.main(
      [
        "animate",
        "--model",
        str(model_dir),
        "--input",
        str(inp),
        "--out",
        str(out),
        "--frames",
        "3",
        "--grid",
        "--format",
        "gif",
        "--size",
        "32",
      ]
    )
    == 0
  )
  assert len(imageio.mimread(str(out / "congealing.gif"))) == 3
  assert (
    cli.main(
      [
        "congeal",
        "--model",
        str(model_dir),
        "--input",
        str(inp / "im0.png"),
        "--out",
        str(tmp_path / "c"),
        "--flow_image",
      ]
    )
    == 0
  )
  assert (tmp_path / "c" / "im0_flow.png").exists()
  Image.fromarray(np.zeros((80, 64, 3), np.uint8)).save(tmp_path / "tall.png")  # Wrong size: resized, noted.
  capsys.readouterr()
  assert (
    cli.main(
      [
        "animate",
        "--model",
        str(model_dir),
        "--input",
        str(tmp_path / "tall.png"),
        "--out",
        str(out),
        "--frames",
        "2",
        "--format",
        "gif",
      ]
    )
    == 0
  )
  assert "resized 1" in capsys.readouterr().err and (out / "tall.gif").exists()
  (inp / "bad.png").write_bytes(b"not an image")
  assert cli.main(["animate", "--model", str(model_dir), "--input", str(inp), "--out", str(out)]) == 2
  assert "bad.png" in capsys.readouterr().err


def test_propagate_and_video_with_laplacian_blend_and_correspondences(model_dir, tmp_path):
  import imageio.v2 as imageio

  inp = _write_images(tmp_path / "in")
  label = np.zeros((64, 64, 4), np.uint8)
  label[20:40, 20:44] = (255, 0, 0, 255)
  Image.fromarray(label).save(tmp_path / "label.png")
  common = ["--model", str(model_dir), "--label", str(tmp_path / "label.png"), "--blend", "laplacian"]
  assert cli.main(["propagate", *common, "--input", str(inp), "--out", str(tmp_path / "prop")]) == 0
  assert len(list((tmp_path / "prop").glob("*.png"))) == 2
  src = tmp_path / "in.mp4"
  with imageio.get_writer(str(src), fps=5) as wr:
    for i in range(3):
      wr.append_data(np.full((64, 64, 3), 60 * i, np.uint8))
  assert (
    cli.main(
      [
        "video",
        *common,
        "--input",
        str(src),
        "--out",
        str(tmp_path / "out.mp4"),
        "--chunk",
        "2",
        "--blend_levels",
        "3",
        "--save_correspondences",
        str(tmp_path / "corr.npz"),
      ]
    )
    == 0
  )
  corr = np.load(tmp_path / "corr.npz")
  assert corr["points"].shape == (3, 20 * 24, 2) and corr["inside"].all()
  assert (tmp_path / "out.mp4").stat().st_size > 0


def _bytes(d):
  return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_no_command_writes_over_its_input(model_dir, tmp_path, capsys):
  inp = _write_images(tmp_path / "in", n=2)
  before = _bytes(inp)
  label = tmp_path / "label.png"
  Image.fromarray(np.full((8, 8, 4), 255, np.uint8)).save(label)
  (tmp_path / "v.mp4").write_bytes(b"video bytes")
  (tmp_path / "link").symlink_to(inp)
  (tmp_path / "points_b.json").write_text("[[1, 2]]")
  (tmp_path / "pa.json").symlink_to(tmp_path / "points_b.json")
  m = ["--model", str(model_dir)]
  for argv in [
    ["congeal", "--input", str(inp), "--out", str(inp)],
    ["congeal", "--input", str(inp), "--out", str(tmp_path / "link")],
    ["congeal-dataset", "--input", str(inp), "--out", str(inp)],
    ["propagate", "--input", str(inp), "--label", str(label), "--out", str(inp)],
    [
      "correspond",
      "--image_a",
      str(inp / "im0.png"),
      "--image_b",
      str(inp / "im1.png"),
      "--points_a",
      str(tmp_path / "pa.json"),
      "--out",
      str(tmp_path),
    ],
    ["video", "--input", str(tmp_path / "v.mp4"), "--label", str(label), "--out", str(tmp_path / "v.mp4")],
    ["video", "--input", str(tmp_path / "v.mp4"), "--label", str(label), "--out", str(label)],
    ["congeal", "--input", str(inp / "im1.png"), "--out", str(inp), "--flow_image"],
  ]:
    code = cli.main(argv + m)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: output") and err.count("\n") == 1, (argv, err)
    assert "refusing to" in err
  assert _bytes(inp) == before and (tmp_path / "v.mp4").read_bytes() == b"video bytes"
  assert (tmp_path / "points_b.json").read_text() == "[[1, 2]]"


def test_inputs_sharing_a_stem_get_their_own_outputs(model_dir, tmp_path):
  inp = tmp_path / "in"
  inp.mkdir()
  rng = np.random.RandomState(2)
  for name in ("cat.jpg", "cat.png", "average.png"):
    Image.fromarray(rng.randint(0, 255, (64, 64, 3), np.uint8)).save(inp / name)
  out = tmp_path / "o"
  assert (
    cli.main(["congeal", "--model", str(model_dir), "--input", str(inp), "--out", str(out), "--batch_size", "3"]) == 0
  )
  assert sorted(p.name for p in out.glob("*.png")) == ["average.png", "average.png.png", "cat.jpg.png", "cat.png.png"]
  assert sorted(json.loads((out / "flips.json").read_text())) == ["average.png", "cat.jpg", "cat.png"]


def test_grayscale_label_is_a_white_mask_in_the_cli_and_the_api(model_dir, aligner, tmp_path):
  from jaxgeal.align import splat

  mask = np.zeros((64, 64), np.uint8)
  mask[20:40, 20:40] = 128
  Image.fromarray(mask).save(tmp_path / "mask.png")
  rgba = splat.load_label(tmp_path / "mask.png")
  assert (rgba[..., :3] == 255).all() and (rgba[..., 3] == mask).all()
  np.testing.assert_array_equal(splat.label_rgba(mask), rgba)
  for a, b in zip(splat.label_points(mask), splat.label_points(rgba)):
    np.testing.assert_array_equal(a, b)


def test_a_label_that_is_not_square_is_an_error(model_dir, aligner, images, tmp_path, capsys):
  inp = _write_images(tmp_path / "in", n=1)
  Image.fromarray(np.full((32, 64, 4), 255, np.uint8)).save(tmp_path / "wide.png")
  assert (
    cli.main(
      [
        "propagate",
        "--model",
        str(model_dir),
        "--input",
        str(inp),
        "--label",
        str(tmp_path / "wide.png"),
        "--out",
        str(tmp_path / "o"),
      ]
    )
    == 2
  )
  err = capsys.readouterr().err
  assert "wide.png" in err and "must be square" in err and "64x32" in err and not (tmp_path / "o").exists()
  with pytest.raises(ValueError, match="must be square"):
    aligner.propagate(images[:1], np.full((32, 64, 4), 255, np.uint8))


@pytest.mark.parametrize(
  "argv",
  [
    ["congeal", "--batch_size", "0"],
    ["congeal", "--iters", "-1"],
    ["propagate", "--sigma", "0", "--label", "l.png"],
    ["propagate", "--opacity", "1.5", "--label", "l.png"],
    ["congeal-dataset", "--fraction_retained", "2"],
    ["video", "--fps", "0", "--label", "l.png"],
    ["animate", "--frames", "1"],
  ],
)
def test_bad_numbers_stop_the_parser(argv, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(argv + ["--model", "m", "--input", "i", "--out", "o"])
  assert e.value.code == 2 and "must be" in capsys.readouterr().err


def test_an_output_below_a_file_is_one_line(model_dir, tmp_path, capsys):
  # Tests run as root (a chmod'd directory stays writable): the unwritable place is a path below a file.
  inp = _write_images(tmp_path / "in", n=1)
  assert (
    cli.main(["congeal", "--model", str(model_dir), "--input", str(inp), "--out", str(inp / "im0.png" / "sub")]) == 2
  )
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "is a file, not a directory" in err


def test_video_writer_is_quiet(aligner, tmp_path, monkeypatch):
  import imageio.v2 as imageio

  from jaxgeal.align import video

  calls = []

  class Writer:
    def append_data(self, f):
      pass

    def close(self):
      pass

  monkeypatch.setattr(imageio, "get_writer", lambda *a, **kw: calls.append(kw) or Writer())
  frames = [np.zeros((aligner.size, aligner.size, 3), np.float32)]
  video.propagate_video(aligner, None, tmp_path / "o.mp4", np.zeros((8, 8, 4), np.uint8), frames=frames, fps=5)
  assert calls[0]["ffmpeg_log_level"] == "error"


def test_a_wrong_xla_cpu_setting_is_one_line(model_dir, tmp_path, capsys, monkeypatch):
  inp = tmp_path / "in"
  inp.mkdir()
  Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(inp / "a.png")
  monkeypatch.setenv("JAXGEAL_XLA_CPU_OPTIONS", "maybe")
  assert cli.main(["congeal", "--model", str(model_dir), "--input", str(inp), "--out", str(tmp_path / "o")]) == 2
  err = capsys.readouterr().err
  assert "JAXGEAL_XLA_CPU_OPTIONS='maybe'" in err and "Traceback" not in err
  assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
