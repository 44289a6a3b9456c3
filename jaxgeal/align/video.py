"""Streaming video propagation ("mixed reality", GANgealing §4.3 and appendix G; upstream mixed_reality.py).

Upstream loads every frame into memory; here frames are read one at a time (imageio), processed in chunks of
`chunk` frames (one jitted batch) and written as soon as they are done, so memory does not depend on the video
length. Each frame is congealed independently (no temporal smoothing, as upstream) and the RGBA edit is
splatted into it and alpha-blended (blend_alg 'alpha'; upstream's Laplacian blending is not implemented).
"""
from __future__ import annotations

import itertools
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
from PIL import Image

from jaxgeal import images as images_lib


def _to_model(frame: np.ndarray, size: int) -> np.ndarray:
  """uint8 (H, W, 3|4) frame -> (size, size, 3) floats in [-1, 1] (bicubic resize when needed)."""
  im = Image.fromarray(np.asarray(frame)[..., :3].astype(np.uint8))
  if im.size != (size, size):
    im = im.resize((size, size), Image.BICUBIC)
  return np.asarray(im, np.float32) / 127.5 - 1.0


def read_frames(path, size: int) -> Iterator[np.ndarray]:
  """Yields the frames of a video file one at a time, resized to size x size, in [-1, 1]."""
  import imageio.v2 as imageio  # Optional heavy import: only the video path needs it.
  try:
    reader = imageio.get_reader(str(path))
  except Exception as e:  # imageio raises several types for unreadable files.
    raise ValueError(f"cannot read video {path}: {e}") from e
  try:
    for frame in reader:
      yield _to_model(frame, size)
  finally:
    reader.close()


def chunks(frames: Iterable[np.ndarray], chunk: int) -> Iterator[np.ndarray]:
  """Groups an iterator into (<= chunk, ...) arrays without reading ahead of the current chunk."""
  it = iter(frames)
  while True:
    group = list(itertools.islice(it, chunk))
    if not group:
      return
    yield np.stack(group)


def process_stream(frames: Iterable[np.ndarray], fn: Callable[[np.ndarray], np.ndarray],
                   write: Callable[[np.ndarray], None], chunk: int = 16) -> int:
  """Applies fn to chunks of frames and writes every output frame at once; returns the frame count.

  Batches are padded to `chunk` frames so one compilation serves the whole video.
  """
  count = 0
  for group in chunks(frames, chunk):
    n = len(group)
    if n < chunk:
      group = np.concatenate([group, np.repeat(group[-1:], chunk - n, 0)])
    for frame in np.asarray(fn(group))[:n]:
      write(frame)
    count += n
  return count


def propagate_video(aligner, in_path, out_path, label: np.ndarray, sigma: float = 1.3, opacity: float = 0.75,
                    chunk: int = 16, fps: Optional[float] = None, frames: Optional[Iterable[np.ndarray]] = None,
                    writer=None) -> int:
  """Propagates an RGBA edit into every frame of a video, streaming; returns the number of frames.

  frames / writer can be injected (any iterable of (S, S, 3) frames in [-1, 1]; an object with
  append_data(uint8 frame) and close()); by default they are imageio's reader and writer.
  """
  if frames is None:
    frames = read_frames(in_path, aligner.size)
  own_writer = writer is None
  if own_writer:
    import imageio.v2 as imageio
    if fps is None:
      try:
        fps = imageio.get_reader(str(in_path)).get_meta_data().get("fps", 30)
      except Exception:  # Metadata is optional.
        fps = 30
    writer = imageio.get_writer(str(out_path), fps=fps)
  fn = lambda batch: aligner.propagate(batch, label, sigma=sigma, opacity=opacity)["composite"]
  try:
    return process_stream(frames, fn, lambda f: writer.append_data(images_lib.to_uint8(f)), chunk)
  finally:
    if own_writer:
      writer.close()
