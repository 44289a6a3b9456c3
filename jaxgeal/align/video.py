"""Streaming video propagation ("mixed reality", GANgealing §4.3 and appendix G; upstream mixed_reality.py).

Upstream loads every frame into memory; here frames are read one at a time (imageio), processed in chunks of
`chunk` frames (one jitted batch) and written as soon as they are done, so memory does not depend on the video
length. Each frame is congealed independently (no temporal smoothing, as upstream) and the RGBA edit is
splatted into it and composited by alpha or Laplacian-pyramid blending (upstream --blend_alg; blend.py).

Correspondences (upstream --save_correspondences, a (frames, points, 2) tensor) are streamed to disk too:
`CorrespondenceWriter` appends each frame's points to raw scratch files and, at the end, copies them block by
block into one .npz, so neither the frames nor the points of the whole video are ever held in memory. The .npz
holds

    points     (F, P, 2) float32  image pixel (x, y) of every labelled congealed pixel in every frame, at the
                                  S x S model resolution the frames are processed (and written) at; pixel
                                  centres at integers, so (x + 0.5) * W / S - 0.5 maps to a W-wide original;
    inside     (F, P)    bool     whether the point landed inside the frame (only those are splatted);
    congealed  (P, 2)    float32  the label's pixels (x, y) with alpha > 0, row-major (splat.label_points);
    size, label_size     int      S and the label's side L.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import shutil
import zipfile
from collections.abc import Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from jaxgeal import cli
from jaxgeal import images as images_lib
from jaxgeal.align import blend as blend_lib
from jaxgeal.align import splat as splat_lib


def _to_model(frame: np.ndarray, size: int) -> np.ndarray:
  """uint8 (H, W, 3|4) frame -> (size, size, 3) floats in [-1, 1] (bicubic resize when needed)."""
  im = Image.fromarray(np.asarray(frame)[..., :3].astype(np.uint8))
  if im.size != (size, size):
    im = im.resize((size, size), Image.BICUBIC)
  return np.asarray(im, np.float32) / 127.5 - 1.0


# ffmpeg writers print errors only: no banner, no progress, whatever imageio's default.
FFMPEG_QUIET = {"ffmpeg_log_level": "error"}


def ffmpeg_kwargs(path) -> dict:
  """imageio writer kwargs silencing ffmpeg for a path ffmpeg handles (not .gif, which Pillow writes)."""
  return {} if pathlib.Path(path).suffix.lower() == ".gif" else dict(FFMPEG_QUIET)


def read_frames(path, size: int) -> Iterator[np.ndarray]:
  """Yields the frames of a video file one at a time, resized to size x size, in [-1, 1]."""
  import imageio.v2 as imageio  # Optional heavy import: only the video path needs it.

  try:
    reader = imageio.get_reader(str(path))  # The reader parses ffmpeg's stderr itself; nothing is printed.
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


def process_stream(frames: Iterable[np.ndarray], fn: Callable, write: Callable, chunk: int = 16) -> int:
  """Applies fn to chunks of frames and writes every output frame at once; returns the frame count.

  fn maps a (chunk, ...) batch to one array, or a tuple of arrays, with a row per frame; write receives each
  frame's row (or rows, as separate arguments). Batches are padded to `chunk` frames so one compilation
  serves the whole video; the padding rows are never written.
  """
  count = 0
  for group in chunks(frames, chunk):
    n = len(group)
    if n < chunk:
      group = np.concatenate([group, np.repeat(group[-1:], chunk - n, 0)])
    outs = fn(group)
    if isinstance(outs, tuple):
      for row in zip(*(np.asarray(o)[:n] for o in outs)):
        write(*row)
    else:
      for frame in np.asarray(outs)[:n]:
        write(frame)
    count += n
  return count


def correspondences_path(path) -> pathlib.Path:
  """Where correspondences asked for at `path` are written: `path`, with .npz appended unless it ends so."""
  path = pathlib.Path(path)
  return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


class CorrespondenceWriter:
  """Streams per-frame congealed -> frame correspondences into one .npz (format: module docstring).

  append() writes each frame's rows straight to scratch files next to the target; close() assembles the .npz
  from them in 256 KiB blocks and deletes them, abort() only deletes them. Memory use is one frame's points.
  """

  def __init__(self, path, label: np.ndarray, size: int):
    self.path = correspondences_path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self.congealed, _ = splat_lib.label_points(label)
    self.label_size, self.size, self.count = int(np.asarray(label).shape[0]), int(size), 0
    self._tmp = {k: self.path.with_name(f".{self.path.name}.{k}.tmp") for k in ("points", "inside")}
    self._files = {k: open(p, "wb") for k, p in self._tmp.items()}

  def append(self, points: np.ndarray, inside: np.ndarray) -> None:
    """One frame's (P, 2) image points and (P,) inside flags."""
    p = len(self.congealed)
    points, inside = np.asarray(points, np.float32), np.asarray(inside, bool)
    if points.shape != (p, 2) or inside.shape != (p,):
      raise ValueError(f"expected ({p}, 2) points and ({p},) flags, got {points.shape} and {inside.shape}")
    self._files["points"].write(points.tobytes())
    self._files["inside"].write(inside.tobytes())
    self.count += 1

  def _member(self, zf, name: str, dtype, shape) -> None:
    with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
      header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
      np.lib.format.write_array_header_1_0(f, header)
      with open(self._tmp[name], "rb") as src:
        shutil.copyfileobj(src, f, 1 << 18)

  def close(self) -> pathlib.Path:
    for f in self._files.values():
      f.close()
    p = len(self.congealed)
    try:
      with zipfile.ZipFile(self.path, "w", zipfile.ZIP_DEFLATED) as zf:
        self._member(zf, "points", np.float32, (self.count, p, 2))
        self._member(zf, "inside", np.bool_, (self.count, p))
        for name, arr in (
          ("congealed", self.congealed.astype(np.float32)),
          ("size", np.int64(self.size)),
          ("label_size", np.int64(self.label_size)),
        ):
          with zf.open(f"{name}.npy", "w") as f:
            np.lib.format.write_array(f, np.asarray(arr))
    finally:
      self.abort()
    return self.path

  def abort(self) -> None:
    for f in self._files.values():
      f.close()
    for p in self._tmp.values():
      if p.exists():
        os.remove(p)


def propagate_video(
  aligner,
  in_path,
  out_path,
  label: np.ndarray,
  sigma: float = 1.3,
  opacity: float = 0.75,
  chunk: int = 16,
  fps: float | None = None,
  frames: Iterable[np.ndarray] | None = None,
  writer=None,
  blend: str = "alpha",
  levels: int = blend_lib.DEFAULT_LEVELS,
  save_correspondences=None,
) -> int:
  """Propagates an RGBA edit into every frame of a video, streaming; returns the number of frames.

  frames / writer can be injected (any iterable of (S, S, 3) frames in [-1, 1]; an object with
  append_data(uint8 frame) and close()); by default they are imageio's reader and writer. blend / levels
  choose the compositing (blend.py). save_correspondences: a path; the congealed -> frame correspondences of
  every frame are streamed to it as .npz (see the module docstring). An output that is the input video (or
  the same file as the other output) raises `cli.UsageError` (a ValueError) before anything is opened.
  """
  if blend not in blend_lib.METHODS:  # Before any file is opened.
    raise ValueError(f"blend must be one of {blend_lib.METHODS}, got {blend!r}")
  # The writer truncates its file before the first frame is read: an output that is the input destroys it.
  outputs = ([out_path] if writer is None else []) + (
    [correspondences_path(save_correspondences)] if save_correspondences is not None else []
  )
  cli.check_outputs(outputs, [in_path] if frames is None and in_path is not None else [])
  if frames is None:
    frames = read_frames(in_path, aligner.size)
  own_writer = writer is None
  if own_writer:
    import imageio.v2 as imageio

    if fps is None:
      try:
        with imageio.get_reader(str(in_path)) as meta_reader:
          fps = meta_reader.get_meta_data().get("fps", 30)
      except Exception:  # Metadata is optional.
        fps = 30
    writer = imageio.get_writer(str(out_path), fps=fps, **ffmpeg_kwargs(out_path))
  corr = None if save_correspondences is None else CorrespondenceWriter(save_correspondences, label, aligner.size)

  def fn(batch):
    prop = aligner.propagate(batch, label, sigma=sigma, opacity=opacity, blend=blend, levels=levels)
    return prop["composite"], prop["points"], prop["inside"]

  def write(frame, points, inside):
    writer.append_data(images_lib.to_uint8(frame))
    if corr is not None:
      corr.append(points, inside)

  done = False
  try:
    n = process_stream(frames, fn, write, chunk)
    done = True
    return n
  finally:
    if own_writer:
      writer.close()
    if corr is not None and done:
      corr.close()
    elif corr is not None:  # A failed run leaves no half-written .npz behind.
      corr.abort()
