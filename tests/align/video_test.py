"""Streaming video propagation: bounded memory (at most `chunk` frames held), frame count, saved
correspondences equal to the Aligner's, written without holding the video's points in memory."""

import numpy as np
import pytest

from jaxgeal.align import splat, video
from tests.align.conftest import make_model


class CountingReader:
  """A fake frame source that records how many frames were taken but not yet written."""

  def __init__(self, n, size):
    self.n, self.size, self.read, self.written, self.max_held = n, size, 0, 0, 0

  def __iter__(self):
    for i in range(self.n):
      self.read += 1
      self.max_held = max(self.max_held, self.read - self.written)
      yield np.full((self.size, self.size, 3), (i % 7) / 7.0, np.float32)


def test_process_stream_bounded_memory():
  reader = CountingReader(23, 8)
  out = []

  def write(frame):
    reader.written += 1
    out.append(float(frame.mean()))

  n = video.process_stream(reader, lambda b: b * 2, write, chunk=5)
  assert n == 23 and len(out) == 23 and reader.max_held <= 5
  np.testing.assert_allclose(out[8], 2 * (8 % 7) / 7.0, rtol=1e-6)


def test_propagate_video_streams(aligner, tmp_path):
  reader = CountingReader(5, aligner.size)

  class Writer:
    frames = []

    def append_data(self, f):
      reader.written += 1
      self.frames.append(f)

    def close(self):
      pass

  label = np.zeros((16, 16, 4), np.uint8)
  label[4:8, 4:8] = (255, 0, 0, 255)
  w = Writer()
  n = video.propagate_video(aligner, None, None, label, chunk=3, frames=reader, writer=w)
  assert n == 5 and len(w.frames) == 5 and reader.max_held <= 3
  assert w.frames[0].dtype == np.uint8 and w.frames[0].shape == (aligner.size, aligner.size, 3)


def test_video_file_roundtrip(aligner, tmp_path):
  import imageio.v2 as imageio

  src = tmp_path / "in.mp4"
  with imageio.get_writer(str(src), fps=5) as wr:
    for i in range(4):
      wr.append_data(np.full((64, 64, 3), 40 * i, np.uint8))
  label = np.zeros((16, 16, 4), np.uint8)
  label[4:8, 4:8] = (255, 0, 0, 255)
  n = video.propagate_video(aligner, src, tmp_path / "out.mp4", label, chunk=3)
  assert n == 4 and (tmp_path / "out.mp4").stat().st_size > 0


class RandomFrames(CountingReader):
  """Distinct random frames (so that every frame gets its own warp), counting like CountingReader."""

  def __iter__(self):
    for i in range(self.n):
      self.read += 1
      self.max_held = max(self.max_held, self.read - self.written)
      yield np.random.RandomState(i).uniform(-1, 1, (self.size, self.size, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def flow_aligner(tmp_path_factory):
  from jaxgeal.align import Aligner

  return Aligner.load(make_model(tmp_path_factory.mktemp("video_flow") / "model", flow_random=True))


def test_saved_correspondences_match_the_aligner(flow_aligner, tmp_path):
  a = flow_aligner
  reader = RandomFrames(5, a.size)

  class Writer:
    def append_data(self, f):
      reader.written += 1

    def close(self):
      pass

  label = np.zeros((32, 32, 4), np.uint8)
  label[10:14, 8:20] = (0, 0, 255, 255)
  label[31, 31] = (255, 255, 255, 128)
  n = video.propagate_video(
    a,
    None,
    None,
    label,
    chunk=2,
    frames=reader,
    writer=Writer(),
    blend="laplacian",
    save_correspondences=tmp_path / "corr",
  )  # .npz is appended.
  assert n == 5 and reader.max_held <= 2
  assert sorted(p.name for p in tmp_path.iterdir()) == ["corr.npz"]  # No scratch files left behind.
  saved = np.load(tmp_path / "corr.npz")
  frames = np.stack(list(RandomFrames(5, a.size)))
  congealed, _ = splat.label_points(label)
  expected = a.uncongeal_points(frames, np.broadcast_to(congealed, (5,) + congealed.shape), res=32)
  assert saved["points"].shape == (5, len(congealed), 2) and saved["points"].dtype == np.float32
  np.testing.assert_allclose(saved["points"], expected, atol=1e-4)
  assert np.ptp(saved["points"][:, 0], axis=0).max() > 0.1  # The warps differ from frame to frame.
  np.testing.assert_array_equal(saved["inside"], ((expected > -0.5) & (expected < a.size - 0.5)).all(-1))
  np.testing.assert_array_equal(saved["congealed"], congealed)
  assert int(saved["size"]) == a.size and int(saved["label_size"]) == 32


def test_correspondence_writer_memory_is_bounded(tmp_path):
  import tracemalloc

  label = np.zeros((40, 40, 4), np.uint8)
  label.reshape(-1, 4)[:1000] = 255  # 1000 points (labels are square).
  points = np.random.RandomState(0).uniform(0, 64, (1000, 2)).astype(np.float32)
  tracemalloc.start()
  w = video.CorrespondenceWriter(tmp_path / "c.npz", label, 64)
  for i in range(1500):  # 1500 frames x 9 kB = 13.5 MB of correspondences.
    w.append(points + i, np.ones(1000, bool))
  path = w.close()
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  assert peak < 4e6  # A few blocks, never the whole video.
  saved = np.load(path)
  assert saved["points"].shape == (1500, 1000, 2)
  np.testing.assert_array_equal(saved["points"][1234], points + 1234)


def test_failed_run_leaves_no_correspondence_file(aligner, tmp_path):
  def frames():
    yield np.zeros((aligner.size, aligner.size, 3), np.float32)
    raise OSError("broken video")

  class Writer:
    def append_data(self, f):
      pass

    def close(self):
      pass

  label = np.zeros((16, 16, 4), np.uint8)
  label[4:8, 4:8] = (255, 0, 0, 255)
  with pytest.raises(OSError, match="broken"):
    video.propagate_video(
      aligner, None, None, label, chunk=1, frames=frames(), writer=Writer(), save_correspondences=tmp_path / "c.npz"
    )
  assert list(tmp_path.iterdir()) == []
  with pytest.raises(ValueError, match="blend must be one of"):
    video.propagate_video(aligner, None, None, label, frames=frames(), writer=Writer(), blend="median")
