"""Shading of the synthetic category (`jaxgeal.datasets.synthetic`): the canonical creature, its fur, the
background and the supersampling grid, vectorised over all samples in float32.

`shade_head` paints the cartoon head at canonical points (integer part labels, one palette lookup), `background`
the gradient + value noise + clutter behind it; `sample_grid` and `box_filter` supersample and anti-alias.
Original to jaxgeal (no upstream file): the category exists so that PCK-Transfer (Peebles et al., CVPR 2022,
Sec. 4.2) has exact ground truth.
"""

from __future__ import annotations

import functools

import numpy as np


def ellipse(x, y, cx, cy, rx, ry):
  return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


def triangle(x, y, tri):
  (x0, y0), (x1, y1), (x2, y2) = tri
  d0 = (x1 - x0) * (y - y0) - (y1 - y0) * (x - x0)
  d1 = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)
  d2 = (x0 - x2) * (y - y2) - (y0 - y2) * (x - x2)
  return ((d0 >= 0) & (d1 >= 0) & (d2 >= 0)) | ((d0 <= 0) & (d1 <= 0) & (d2 <= 0))


def shape_mask(x, y, shape):
  """A rotated ellipse (kind 0) or rectangle (kind 1) with centre, half sizes, angle; unit = image size."""
  kind, (cx, cy), (hx, hy), ang, _ = shape
  cx, cy, hx, hy = (np.float32(v) for v in (cx, cy, hx, hy))  # Keep the dense path float32.
  c, s = np.float32(np.cos(ang)), np.float32(np.sin(ang))
  u, v = c * (x - cx) + s * (y - cy), -s * (x - cx) + c * (y - cy)
  if kind == 0:
    return (u / hx) ** 2 + (v / hy) ** 2 <= 1.0
  return (np.abs(u) <= hx) & (np.abs(v) <= hy)


def hat_weights(t, g: int):
  """(N, g + 1) linear-interpolation weights of positions t in [0, 1] (clamped) on g + 1 evenly spaced knots."""
  f = np.clip(t, 0, 1)[:, None] * np.float32(g)
  return np.maximum(0, 1 - np.abs(f - np.arange(g + 1, dtype=np.float32)))


_EAR = ((0.55, -0.88), (0.12, -0.40), (0.58, -0.15))  # Right ear (x > 0); the left is its mirror via |x|.
_INNER_EAR = ((0.50, -0.76), (0.24, -0.44), (0.52, -0.28))
# Flat-coloured parts, painted in this order over the (textured) fur; indices into the palette of `shade_head`.
_FUR, _INNER, _MUZZLE, _PATCH, _SCLERA, _IRIS, _PUPIL, _HIGHLIGHT, _NOSE, _MOUTH, _BOW = range(11)


def fur_texture(x, y, r):
  kind = r["texture_kind"]
  if kind == 1:  # Stripes across the head.
    f, ang, ph, thr = (np.float32(v) for v in r["stripe"])
    t = np.clip((np.sin(f * (x * np.cos(ang) + y * np.sin(ang)) + ph) - thr) * 3, 0, 1)
  elif kind == 2:  # Spots.
    t = np.zeros_like(x)
    for sx, sy, sr in r["spots"].astype(np.float32):
      t = np.maximum(t, ((x - sx) ** 2 + (y - sy) ** 2 <= sr * sr).astype(np.float32))
  elif kind == 3:  # Smooth blotches: value noise over the canonical square [-1, 1]^2.
    grid = r["fur_noise"][..., 0]
    wx, wy = hat_weights((x + 1) / 2, grid.shape[1] - 1), hat_weights((y + 1) / 2, grid.shape[0] - 1)
    t = np.clip((np.sum((wy @ grid) * wx, axis=1) - 0.5) * 3 + 0.5, 0, 1)
  else:
    return np.zeros_like(x)
  return t * np.float32(r["texture_strength"])


def shade_head(x, y, r, asymmetric):
  """The canonical creature at canonical points: (N, 3) colours in [0, 1] and the (N,) silhouette.

  Parts are painted as integer labels on flat arrays and coloured by one palette lookup at the end (much
  faster than compositing (N, 3) colour arrays part by part).
  """
  ax = np.abs(x)  # Bilateral parts are tested once on |x|.
  face = ellipse(x, y, 0.0, 0.05, 0.62, 0.55)
  silhouette = face | triangle(ax, y, _EAR)
  label = np.where(triangle(ax, y, _INNER_EAR) & ~face, _INNER, _FUR).astype(np.int8)

  def paint(mask, part):
    np.copyto(label, np.int8(part), where=mask)

  paint(ellipse(x, y, 0.0, 0.27, 0.30, 0.19), _MUZZLE)
  if asymmetric:  # Markings on the creature's left only: they make mirrored renders distinguishable.
    paint(ellipse(x, y, -0.24, -0.07, 0.20, 0.16), _PATCH)
  ex, ey = ax - 0.24, y + 0.05
  e2 = ex * ex + ey * ey
  paint((ex / 0.13) ** 2 + (ey / 0.10) ** 2 <= 1, _SCLERA)
  paint(e2 <= 0.075**2, _IRIS)
  paint(e2 <= 0.04**2, _PUPIL)
  hx = np.where(x < 0, x + 0.21, x - 0.27)  # Highlight up-right of each pupil (same side in both eyes).
  paint(hx * hx + (y + 0.08) ** 2 <= 0.022**2, _HIGHLIGHT)
  paint(ellipse(x, y, 0.0, 0.17, 0.085, 0.06), _NOSE)
  rho = np.sqrt((x / 0.16) ** 2 + ((y - 0.30) / 0.10) ** 2)
  paint((np.abs(rho - 1) <= 0.2) & (y >= 0.30) | ((ax <= 0.012) & (y >= 0.2) & (y <= 0.40)), _MOUTH)
  if asymmetric:
    bow = triangle(x, y, ((-0.28, -0.47), (-0.45, -0.58), (-0.45, -0.36))) | triangle(
      x, y, ((-0.28, -0.47), (-0.11, -0.58), (-0.11, -0.36))
    )
    paint(bow, _BOW)
    silhouette |= bow
  palette = np.stack(
    [
      r["fur"],
      r["inner_ear"],
      r["muzzle"],
      r["patch"],
      np.full(3, 0.96, np.float32),
      r["iris"],
      np.full(3, 0.03, np.float32),
      np.ones(3, np.float32),
      r["nose"],
      r["nose"] * 0.5,
      r["bow"],
    ]
  )
  col = palette[label]
  fur = np.flatnonzero(silhouette & (label == _FUR))
  t = fur_texture(x[fur], y[fur], r)[:, None]
  col[fur] = r["fur"] * (1 - t) + r["fur2"] * t
  return col, silhouette


def background(r, size: int, ss: int, u, v):
  """(N, 3) background colours at the supersample grid; (u, v) are its flat positions in image-size units."""
  t = (np.arange(size * ss, dtype=np.float32) + 0.5) / (ss * size) - 0.5 / size  # 1-D axis, image units.
  d = np.array([np.cos(r["bg_dir"]), np.sin(r["bg_dir"])], np.float32)
  w = np.clip((t[None, :] - 0.5) * d[0] + (t[:, None] - 0.5) * d[1] + 0.5, 0, 1).reshape(-1, 1)
  g = r["bg_noise"].shape[0] - 1
  wt = hat_weights(t, g)  # The noise is separable on the regular grid: two small matrix products.
  rows = np.tensordot(wt, r["bg_noise"], axes=(1, 0))  # (y, i, c)
  noise = np.matmul(wt[None], rows).reshape(-1, 3)  # (y, x, c)
  col = r["bg1"] * (1 - w) + r["bg2"] * w + np.float32(r["bg_noise_amp"]) * noise
  shapes = r["clutter"][: r["num_clutter"]]
  if shapes:
    label = np.full(len(u), -1, np.int8)
    for i, shape in enumerate(shapes):
      np.copyto(label, np.int8(i), where=shape_mask(u, v, shape))
    hit = np.flatnonzero(label >= 0)
    col[hit] = np.stack([s[-1] for s in shapes])[label[hit]]
  return col


@functools.lru_cache(maxsize=8)
def sample_grid(size: int, ss: int):
  """Supersample positions (pixel units; pixel i covers [i - 1/2, i + 1/2]) as flat float32 x, y arrays."""
  t = ((np.arange(size * ss) + 0.5) / ss - 0.5).astype(np.float32)
  y, x = np.meshgrid(t, t, indexing="ij")
  x, y = x.ravel(), y.ravel()
  x.flags.writeable = y.flags.writeable = False
  return x, y


def box_filter(a, size, ss):
  return a.reshape(size, ss, size, ss, -1).mean(axis=(1, 3))
