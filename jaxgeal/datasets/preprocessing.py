"""Crop / pad / resize of dataset images, and the same geometry applied to points and boxes.

Implements the image pre-processing choices of upstream GANgealing `prepare_data.py` (wpeebles/gangealing at ffa6387,
`--pad zero|border|center|resize_small_side|none`) and its ACSM-style CUB crop (`--cub_acsm`), with one
difference on purpose: every function also returns the exact `Affine` map from source pixels to output pixels,
so key points and boxes are moved by the very geometry that moved the pixels (upstream re-derives it by hand
for SPair/CUB, with a corner-based scale that is off by up to half a pixel).

Point convention (the one `jaxgeal.ops.points` uses): a point is (x, y) in pixel units with pixel *centres* at
integers, so pixel (i, j) covers [i - 0.5, i + 0.5] x [j - 0.5, j + 0.5]. Resizing an axis from n to m
pixels maps x -> (x + 0.5) * m / n - 0.5: a key point at the centre of a block of n/m source pixels lands on
the centre of the one output pixel that block becomes.

Modes, all producing uint8 (H, W, 3) arrays (upstream semantics and rounding kept):
  * "center": crop the centred min(H, W) square ((H - c) // 2 from the top), resize to size x size.
  * "zero" / "border": resize the long side to `size` and the short one to round(size * short / long)
    (numpy's round-half-even, as upstream), then pad the short side to `size` with zeros / the edge pixels,
    floor((size - short) / 2) before and the rest after.
  * "resize_small_side": short side -> size, long side -> long * size // short; aspect kept, *not* square
    (upstream uses it for video frames that the STN crops later).
  * "none": the image as it is.
  * `acsm_box_crop`: the CUB crop of ACSM/upstream: the tight box padded by 5% of its size on each side,
    made square (Python-2 half-up rounding, as ACSM), cropped with edge padding where it leaves the image,
    resized to size x size.
Resampling is PIL's LANCZOS (= the `Image.ANTIALIAS` upstream uses), on uint8 RGB.
"""

from __future__ import annotations

import dataclasses
import decimal
from collections.abc import Sequence

import numpy as np
from PIL import Image

from jaxgeal import images as images_lib

PAD_MODES = ("center", "zero", "border", "resize_small_side", "none")
SQUARE_MODES = ("center", "zero", "border")  # Modes whose output is always size x size.


@dataclasses.dataclass(frozen=True)
class Affine:
  """Axis-aligned map of pixel-centre points: x' = scale[0] * x + offset[0], y' = scale[1] * y + offset[1]."""

  scale: tuple[float, float] = (1.0, 1.0)
  offset: tuple[float, float] = (0.0, 0.0)

  def __call__(self, points) -> np.ndarray:
    """Maps (..., 2) xy points (float32 result)."""
    p = np.asarray(points, np.float64)
    return (p * np.asarray(self.scale) + np.asarray(self.offset)).astype(np.float32)

  def boxes(self, boxes) -> np.ndarray:
    """Maps (..., 4) (x1, y1, x2, y2) boxes; the scales are positive, so corners stay ordered."""
    b = np.asarray(boxes, np.float64)
    return self(b.reshape(b.shape[:-1] + (2, 2))).reshape(b.shape)

  def then(self, other: Affine) -> Affine:
    """The map `other(self(p))`."""
    sx, sy = self.scale[0] * other.scale[0], self.scale[1] * other.scale[1]
    tx = self.offset[0] * other.scale[0] + other.offset[0]
    ty = self.offset[1] * other.scale[1] + other.offset[1]
    return Affine((sx, sy), (tx, ty))

  def inverse(self) -> Affine:
    sx, sy = self.scale
    return Affine((1.0 / sx, 1.0 / sy), (-self.offset[0] / sx, -self.offset[1] / sy))

  def to_array(self) -> np.ndarray:
    """(4,) float32 [sx, sy, tx, ty], the form stored with every annotated example."""
    return np.asarray([*self.scale, *self.offset], np.float32)

  @classmethod
  def from_array(cls, a) -> Affine:
    sx, sy, tx, ty = (float(v) for v in np.asarray(a).reshape(4))
    return cls((sx, sy), (tx, ty))


def to_rgb_array(image: Image.Image) -> np.ndarray:
  """Any PIL image -> uint8 (H, W, 3) by `jaxgeal.images.to_rgb` (16-bit scaled, alpha dropped); decodes fully,
  so truncated files raise here (OSError)."""
  return np.asarray(images_lib.to_rgb(image), np.uint8)


def crop(image: np.ndarray, left: int, top: int, width: int, height: int, fill: str = "edge"):
  """Window [left, left + width) x [top, top + height) of `image`; it may reach outside the image.

  Outside pixels repeat the nearest edge pixel (fill="edge", numpy's 'edge' padding) or are 0 (fill="zero"),
  so this one function is crop, pad and the ACSM out-of-image crop. Returns (crop, Affine).
  """
  if fill not in ("edge", "zero"):
    raise ValueError(f"crop: fill must be 'edge' or 'zero', got {fill!r}")
  if width <= 0 or height <= 0:
    raise ValueError(f"crop: empty window {width}x{height}")
  h, w = image.shape[:2]
  rows = np.arange(top, top + height)
  cols = np.arange(left, left + width)
  out = image[np.clip(rows, 0, h - 1)][:, np.clip(cols, 0, w - 1)]
  if fill == "zero":
    inside = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]
    out = np.where(inside[..., None], out, np.zeros_like(out))
  return np.ascontiguousarray(out), Affine((1.0, 1.0), (-float(left), -float(top)))


def resize(image: np.ndarray, width: int, height: int):
  """LANCZOS resize to (height, width); returns (resized, Affine). Same size returns the input unchanged."""
  h, w = image.shape[:2]
  if (w, h) == (width, height):
    return image, Affine()
  out = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))
  sx, sy = width / w, height / h
  # Pixel centres: (x + 0.5) * s - 0.5 (see module docstring).
  return out, Affine((sx, sy), (0.5 * sx - 0.5, 0.5 * sy - 0.5))


def _round_half_even(x: float) -> int:
  return int(np.around(x))  # Upstream rounds the short side with np.around.


def _round_half_up(x: float) -> int:
  """Python 2's round (half away from zero), which ACSM's box code relies on; exact on the float's value."""
  return int(decimal.Decimal(x).to_integral_value(rounding=decimal.ROUND_HALF_UP))


def preprocess(image: np.ndarray, size: int, pad: str):
  """One upstream `--pad` mode at one output size: uint8 (H, W, 3) -> (uint8 image, Affine source->output)."""
  if pad not in PAD_MODES:
    raise ValueError(f"pad must be one of {PAD_MODES}, got {pad!r}")
  if pad == "none":
    return image, Affine()
  if size <= 0:
    raise ValueError(f"size must be positive, got {size}")
  h, w = image.shape[:2]
  if pad == "center":
    c = min(h, w)
    image, t_crop = crop(image, (w - c) // 2, (h - c) // 2, c, c)
    image, t_resize = resize(image, size, size)
    return image, t_crop.then(t_resize)
  if pad == "resize_small_side":
    new_w, new_h = (size, h * size // w) if w < h else (w * size // h, size)
    return resize(image, new_w, new_h)
  # zero / border: long side -> size, short side rounded, then pad the short side to a square.
  if h <= w:
    new_w, new_h = size, max(1, _round_half_even(size * h / w))
  else:
    new_w, new_h = max(1, _round_half_even(size * w / h)), size
  image, t_resize = resize(image, new_w, new_h)
  image, t_pad = crop(
    image, -((size - new_w) // 2), -((size - new_h) // 2), size, size, fill="zero" if pad == "zero" else "edge"
  )
  return image, t_resize.then(t_pad)


def acsm_square_box(bbox: Sequence[float], pad_fraction: float = 0.05) -> tuple[int, int, int]:
  """ACSM's crop window for a tight 0-based inclusive box (x1, y1, x2, y2): (left, top, side) in pixels.

  Pads each side by `pad_fraction` of the box's size (sizes count pixels inclusively, w = x2 - x1 + 1), rounds
  half up, grows the shorter side symmetrically to make a square.
  """
  x1, y1, x2, y2 = (float(v) for v in bbox)
  bw, bh = x2 - x1 + 1, y2 - y1 + 1
  x1, x2 = x1 - pad_fraction * bw, x2 + pad_fraction * bw
  y1, y2 = y1 - pad_fraction * bh, y2 + pad_fraction * bh
  x1, y1, x2, y2 = (_round_half_up(v) for v in (x1, y1, x2, y2))
  bw, bh = x2 - x1 + 1, y2 - y1 + 1
  side = max(bw, bh)
  left = x1 - _round_half_up((side - bw) / 2.0)
  top = y1 - _round_half_up((side - bh) / 2.0)
  return left, top, side


def acsm_box_crop(image: np.ndarray, bbox: Sequence[float], size: int, pad_fraction: float = 0.05):
  """The CUB/ACSM crop: square window around `bbox` (see `acsm_square_box`), edge padded, resized to size."""
  left, top, side = acsm_square_box(bbox, pad_fraction)
  image, t_crop = crop(image, left, top, side, side, fill="edge")
  image, t_resize = resize(image, size, size)
  return image, t_crop.then(t_resize)


def output_shape(size: int, pad: str) -> tuple[int | None, int | None, int]:
  """Static (H, W, 3) of `preprocess` outputs; None where it depends on the source image."""
  return (size, size, 3) if pad in SQUARE_MODES else (None, None, 3)
