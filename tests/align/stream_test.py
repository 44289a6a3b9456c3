"""Streamed congealing: `Aligner.congeal_batches` equals `congeal` and compiles once for a padded last batch; the
congeal CLI streams a folder (same files, a progress bar in images/s on a terminal) and an unreadable image is a
one-line error that leaves nothing written."""

import io
import json
import sys

import numpy as np
import pytest
from PIL import Image

from jaxgeal import images as images_lib
from jaxgeal.align import Aligner
from jaxgeal.align import __main__ as cli
from tests.align.conftest import SIZE, make_model

N = 5  # Images; with batches of 2 the last batch is padded.


@pytest.fixture(scope="module")
def flow_model_dir(tmp_path_factory):
  # A random residual flow: the flip (B.4) then differs between images, so the flips are checked too.
  return make_model(tmp_path_factory.mktemp("stream_flow") / "model", flow_random=True, seed=1)


@pytest.fixture(scope="module")
def five_images():
  return np.random.RandomState(3).uniform(-1, 1, (N, SIZE, SIZE, 3)).astype(np.float32)


def _concat(parts):
  return {k: None if parts[0][k] is None else np.concatenate([p[k] for p in parts]) for k in parts[0]}


def test_stream_equals_congeal(flow_model_dir, five_images):
  ref = Aligner.load(flow_model_dir).congeal(five_images)  # One batch of 5.
  assert 0 < ref["flipped"].sum() < N
  a = Aligner.load(flow_model_dir, batch_size=2)
  chunks = (c for c in (five_images[:3], five_images[3:3], five_images[3:]))  # Lazy, uneven, one empty.
  parts = list(a.congeal_batches(chunks))
  assert [len(p["aligned"]) for p in parts] == [2, 1, 2]
  out = _concat(parts)
  assert sorted(out) == sorted(ref)
  # Batches of 2 and of 5 run other kernel tilings, so the warps differ in float32 rounding; the aligned pixels
  # sample noise images (neighbours differ by up to 2) at those warps, which magnifies that rounding to 2.2e-5
  # (seen on a 2-core AVX2 EPYC): 1e-4 for them, 1e-5 for the rest.
  for key in ("aligned", "grid", "matrix", "flow", "score", "inputs"):
    np.testing.assert_allclose(out[key], ref[key], atol=1e-4 if key == "aligned" else 1e-5, err_msg=key)
  np.testing.assert_array_equal(out["flipped"], ref["flipped"])
  np.testing.assert_array_equal(out["oob"], ref["oob"])
  total = sum(p["aligned"].sum(0, dtype=np.float64) for p in parts)
  np.testing.assert_allclose(total / N, ref["aligned"].mean(0), atol=1e-5)
  # congeal itself runs on the stream: the same batches give the same arrays, bit for bit.
  same = a.congeal(five_images)
  for key, value in _concat(list(a.congeal_batches([five_images[:2], five_images[2:]]))).items():
    np.testing.assert_array_equal(value, same[key], err_msg=key)


def test_stream_checks_like_congeal(aligner, five_images):
  with pytest.raises(ValueError, match="cluster must be in"):
    aligner.congeal_batches([five_images], cluster=3)  # Raised at the call, before any chunk is read.
  with pytest.raises(ValueError, match="batch_size must be at least 1, got -2"):
    aligner.congeal_batches([five_images], batch_size=-2)
  with pytest.raises(ValueError, match=r"images must be \(N, 64, 64, 3\)"):  # Each chunk is checked.
    list(aligner.congeal_batches([five_images[:2], five_images[:, :32]]))
  with pytest.raises(ValueError, match="at least one image"):
    aligner.congeal(five_images[:0])


class CountingSTN:
  """The STN with a count of its `apply` calls: each is one trace of the aligner's jitted forward."""

  def __init__(self, stn):
    self.stn, self.traces = stn, 0

  def apply(self, *args, **kwargs):
    self.traces += 1
    return self.stn.apply(*args, **kwargs)

  def __getattr__(self, name):
    return getattr(self.stn, name)


def test_one_compilation_for_every_batch_including_the_padded_last(aligner, five_images):
  stn = CountingSTN(aligner.stn)
  a = Aligner(stn, aligner.variables, aligner.config, batch_size=2)
  assert sum(len(p["aligned"]) for p in a.congeal_batches([five_images[:3], five_images[3:]])) == N
  assert stn.traces == 1  # Batches of 2, 1 (padded to 2) and 2.
  a.congeal(five_images)  # min(2, 5): the same shape again.
  assert stn.traces == 1
  a.congeal(five_images[:1])  # A batch of 1 is a new shape: the counter sees the retrace.
  assert stn.traces == 2


class Terminal(io.StringIO):
  def isatty(self):
    return True


def _write_folder(d, n=N, seed=4):
  d.mkdir()
  rng = np.random.RandomState(seed)
  for i in range(n):
    Image.fromarray(rng.randint(0, 255, (SIZE + 8 * (i == 1), SIZE, 3), np.uint8)).save(d / f"im{i}.png")
  return d


def test_cli_streams_a_folder_with_progress(flow_model_dir, tmp_path, monkeypatch, capsys):
  inp = _write_folder(tmp_path / "in")
  out = tmp_path / "out"
  err = Terminal()
  monkeypatch.setattr(sys, "stderr", err)
  argv = ["congeal", "--model", str(flow_model_dir), "--input", str(inp), "--batch_size", "2", "--flow_image"]
  assert cli.main(argv + ["--out", str(out)]) == 0
  names = [f"im{i}" for i in range(N)]
  expected = sorted([f"{n}.png" for n in names] + [f"{n}_flow.png" for n in names] + ["average.png", "flips.json"])
  assert sorted(p.name for p in out.iterdir()) == expected  # No staging folder left behind.
  assert "resized 1 image(s)" in err.getvalue()
  assert "images/s" in err.getvalue() and f"{N}/{N}" in err.getvalue()
  assert capsys.readouterr().out == f"wrote {N} congealed images and average.png to {out}\n"
  # The same as congealing the images loaded at once (same batches: the same numbers).
  a = Aligner.load(flow_model_dir, batch_size=2)
  ref = a.congeal(np.stack([images_lib.load_image(inp / f"{n}.png", SIZE) for n in names]))
  for name, img in zip(names, images_lib.to_uint8(ref["aligned"])):
    np.testing.assert_array_equal(np.asarray(Image.open(out / f"{name}.png")), img)
  average = np.asarray(Image.open(out / "average.png")).astype(int)
  assert np.abs(average - images_lib.to_uint8(ref["aligned"].mean(0))).max() <= 1  # float64 sum vs float32 mean
  assert json.loads((out / "flips.json").read_text()) == {n: bool(f) for n, f in zip(names, ref["flipped"])}
  assert list(json.loads((out / "flips.json").read_text())) == names
  # Without a terminal (a log file): no bar.
  monkeypatch.setattr(sys, "stderr", io.StringIO())
  assert cli.main(argv + ["--out", str(tmp_path / "out2")]) == 0
  assert "images/s" not in sys.stderr.getvalue() and "resized 1" in sys.stderr.getvalue()


@pytest.mark.parametrize("bad", ["not_an_image", "truncated"])
def test_cli_unreadable_image_is_one_line_and_writes_nothing(model_dir, tmp_path, capsys, bad):
  inp = _write_folder(tmp_path / "in")
  png = (inp / "im0.png").read_bytes()
  # Last in sorted order: the earlier batches are congealed before a truncated file fails to decode.
  (inp / "zz.png").write_bytes(b"not an image" if bad == "not_an_image" else png[: len(png) // 2])
  new, old = tmp_path / "new" / "sub", tmp_path / "old"
  old.mkdir()
  (old / "keep.txt").write_text("kept")
  for out in (new, old):
    argv = ["congeal", "--model", str(model_dir), "--input", str(inp), "--out", str(out), "--batch_size", "2"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("note: resized")]
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot read image {inp / 'zz.png'}"), err
    assert "Traceback" not in err
  assert not (tmp_path / "new").exists()
  assert [p.name for p in old.iterdir()] == ["keep.txt"]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "old"]
