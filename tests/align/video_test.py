"""Streaming video propagation: bounded memory (at most `chunk` frames held) and frame count."""
import numpy as np

from jaxgeal.align import video


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
