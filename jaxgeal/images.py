"""Image I/O and grids: [-1, 1] float NHWC arrays <-> uint8 PNGs, tiled grids for samples and training visuals."""
from __future__ import annotations

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
    grid[y:y + h, x:x + w] = images[i]
  return grid


def save_image(path: str | os.PathLike, image) -> pathlib.Path:
  """Save (H, W, C) uint8 or [-1, 1] floats as PNG/JPEG (by extension), creating parent directories."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    image = to_uint8(image)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)
  return path


def load_image(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
  """Read an image as (H, W, 3) floats in [-1, 1]; optionally resized (bicubic) to size x size.

  Raises ValueError naming the file if it is not a readable image.
  """
  try:
    with Image.open(path) as im:
      im = im.convert("RGB")
      if size is not None and im.size != (size, size):
        im = im.resize((size, size), Image.BICUBIC)
      arr = np.asarray(im, np.float32)
  except (OSError, SyntaxError, ValueError) as e:
    raise ValueError(f"cannot read image {path}: {e}") from e
  return arr / 127.5 - 1.0
