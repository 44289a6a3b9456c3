"""Image I/O and grids: [-1, 1] float NHWC arrays <-> uint8 PNGs, tiled grids for samples and training visuals.

Every image jaxgeal reads (the CLIs, the dataset builders) becomes 8-bit RGB through `to_rgb`, one rule for
every PIL mode:
  * 16-bit samples keep their high byte (v >> 8: 65535 -> 255, 32768 -> 128), which is what PIL itself does
    when it decodes 16-bit RGB / RGBA PNGs; PIL opens 16-bit grayscale as "I;16" (or "I"), whose plain
    convert("RGB") would saturate everything above 255 to white, so those are scaled here. 32-bit "I" is
    read as 16-bit data (clipped), "F" as 0..255.
  * Alpha is dropped (the colour under it is kept), as upstream's convert("RGB"); palette images with a
    transparency entry go through RGBA, so their colours are the palette's.
  * Grayscale ("1", "L", "LA"), CMYK, YCbCr, ... are converted by PIL.
Truncated or unreadable files raise (`load_image`: ValueError naming the file).
"""

from __future__ import annotations

import io
import math
import os
import pathlib

import numpy as np
from PIL import Image


def to_uint8(x) -> np.ndarray:
  """[-1, 1] floats (..., H, W, C) -> uint8, clipped (NaNs become 0)."""
  x = np.nan_to_num(np.asarray(x, np.float32), nan=-1.0)
  return np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def make_grid(images, nrow: int | None = None, padding: int = 2, pad_value: int = 0) -> np.ndarray:
  """(N, H, W, C) images (uint8, or floats in [-1, 1]) -> one (H', W', C) uint8 grid, `nrow` images a row."""
  images = np.asarray(images)
  if images.dtype != np.uint8:
    images = to_uint8(images)
  if images.ndim != 4:
    raise ValueError(f"make_grid: expected (N, H, W, C) images, got shape {images.shape}")
  n, h, w, c = images.shape
  nrow = nrow or int(math.ceil(math.sqrt(n)))
  ncol = int(math.ceil(n / nrow))
  grid = np.full((ncol * (h + padding) + padding, nrow * (w + padding) + padding, c), pad_value, np.uint8)
  for i in range(n):
    r, q = divmod(i, nrow)
    y, x = padding + r * (h + padding), padding + q * (w + padding)
    grid[y : y + h, x : x + w] = images[i]
  return grid


def save_image(path: str | os.PathLike, image) -> pathlib.Path:
  """Save (H, W, C) uint8 or [-1, 1] floats as PNG/JPEG (by extension), creating parent directories; `path` may
  be a bucket path (gs://...)."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    image = to_uint8(image)
  im = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  if "://" in os.fspath(path):  # A bucket (gs://...): encode here, write through epath.
    from etils import epath

    path = epath.Path(path)
    buf = io.BytesIO()
    im.save(buf, format=Image.registered_extensions()[path.suffix.lower()])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  im.save(path)
  return path


def to_rgb(im: Image.Image) -> Image.Image:
  """Any PIL image -> an 8-bit "RGB" image, by the rules in the module docstring (decodes the whole file)."""
  mode = im.mode
  if mode == "RGB":
    im.load()
    return im
  if mode.startswith("I"):  # "I;16", "I;16B", "I;16L", "I;16N", "I".
    a = np.asarray(im).astype(np.int64)
    im = Image.fromarray((np.clip(a, 0, 65535) >> 8).astype(np.uint8), "L")
  elif mode == "F":
    a = np.nan_to_num(np.asarray(im, np.float32))
    im = Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "L")
  elif mode == "P" and "transparency" in im.info:
    im = im.convert("RGBA")
  return im.convert("RGB")


def read_rgb(path: str | os.PathLike) -> np.ndarray:
  """An image file -> uint8 (H, W, 3) (`to_rgb`); raises OSError / ValueError for unreadable or truncated files."""
  with Image.open(path) as im:
    return np.asarray(to_rgb(im), np.uint8)


def load_image(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
  """Read an image as (H, W, 3) floats in [-1, 1]; optionally resized (bicubic) to size x size.

  Raises ValueError naming the file if it is not a readable image.
  """
  try:
    with Image.open(path) as im:
      im = to_rgb(im)
      if size is not None and im.size != (size, size):
        im = im.resize((size, size), Image.BICUBIC)
      arr = np.asarray(im, np.float32)
  except (OSError, SyntaxError, ValueError) as e:
    raise ValueError(f"cannot read image {path}: {e}") from e
  return arr / 127.5 - 1.0
