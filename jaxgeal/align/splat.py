"""Gaussian splatting for dense propagation (GANgealing §4.3, appendix G; upstream splat2d).

Propagating a dense label from the congealed frame into an image (Peebles et al., CVPR 2022, §4.3 "Dense
correspondence" / "mixed reality"): every labelled pixel of the congealed RGBA label is a point; its image
position comes from the STN's sampling grid (uncongeal, §4.1). The points land at sub-pixel positions and can
be sparse where the warp magnifies, so upstream splats them with a Gaussian: each point adds
w = exp(-d² / 2σ²) · value to every pixel within ±2σ (a window, as the CUDA kernel), and the result is
Σ w·value / Σ w. Upstream's kernel is CUDA-only; this is a pure-JAX scatter-add that runs on any backend.

The window radius is a static Python int (shape of the scatter), σ may differ per image (traced). Compositing the
splatted layer over the image (alpha or Laplacian blending) lives in blend.py.
"""
from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxgeal.align.blend import blend_alpha  # noqa: F401  (re-exported: it lived here before blend.py)

Array = jax.Array


def window_radius(sigma_max: float) -> int:
  """Static half-width of the splat window: ±2σ rounded up (upstream's kernel bounds)."""
  return max(1, int(math.ceil(2.0 * float(sigma_max))))


def splat(points: Array, values: Array, size: int, sigma, valid: Optional[Array] = None,
          radius: Optional[int] = None) -> tuple[Array, Array]:
  """Gaussian-splats per-point values into size x size images.

  Args:
    points: (B, P, 2) (x, y) pixel positions (pixel centres at integers).
    values: (B, P, C) or (P, C) values to splat.
    size: side of the output images.
    sigma: scalar or (B,) Gaussian standard deviation in pixels (per image).
    valid: optional (B, P) bool; invalid points contribute nothing (e.g. out-of-bounds points).
    radius: static window half-width; default ±2·max(σ) rounded up. Only offsets within 2σ of the point
      contribute (the window of upstream's kernel), so a larger radius never changes the result.

  Returns:
    (normalised, weight): (B, size, size, C) = Σ w·value / Σ w (0 where nothing landed) and (B, size, size)
    the weight sum Σ w.
  """
  points = jnp.asarray(points, jnp.float32)
  b, p, _ = points.shape
  values = jnp.asarray(values, jnp.float32)
  if values.ndim == 2:
    values = jnp.broadcast_to(values[None], (b,) + values.shape)
  c = values.shape[-1]
  sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (b,))
  if radius is None:
    radius = window_radius(float(np.max(np.asarray(sigma))))
  valid = jnp.ones((b, p), bool) if valid is None else jnp.asarray(valid, bool)
  offs = jnp.arange(-radius, radius + 1)
  oy, ox = jnp.meshgrid(offs, offs, indexing="ij")
  offsets = jnp.stack([ox.ravel(), oy.ravel()], -1)  # (Q, 2)
  base = jnp.round(points).astype(jnp.int32)  # Window centred on the nearest pixel.
  pix = base[:, :, None, :] + offsets[None, None]  # (B, P, Q, 2)
  d2 = jnp.sum(jnp.square(pix.astype(jnp.float32) - points[:, :, None, :]), -1)
  s = sigma[:, None, None]
  w = jnp.exp(-d2 / (2.0 * s * s))
  inside = (pix >= 0).all(-1) & (pix < size).all(-1) & (d2 <= (2.0 * s) ** 2) & valid[:, :, None]
  w = jnp.where(inside, w, 0.0)
  flat = jnp.clip(pix[..., 1], 0, size - 1) * size + jnp.clip(pix[..., 0], 0, size - 1)  # (B, P, Q)
  flat = flat + (jnp.arange(b) * size * size)[:, None, None]
  wsum = jnp.zeros((b * size * size,), jnp.float32).at[flat.ravel()].add(w.ravel())
  wv = (w[..., None] * values[:, :, None, :]).reshape(-1, c)
  vsum = jnp.zeros((b * size * size, c), jnp.float32).at[flat.ravel()].add(wv)
  wsum = wsum.reshape(b, size, size)
  vsum = vsum.reshape(b, size, size, c)
  out = jnp.where(wsum[..., None] > 0, vsum / jnp.maximum(wsum, 1e-12)[..., None], 0.0)
  return out, wsum


def label_points(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Points and values of a congealed RGBA label (upstream's dense-label format, §1.11).

  Args:
    label: (L, L, 4) uint8 RGBA (or (L, L, 3) RGB, then every pixel is opaque; or (L, L) / (L, L, 1) mask).

  Returns:
    (points (P, 2) (x, y) pixels with alpha > 0, values (P, 4): RGB in [-1, 1], alpha in [0, 1]).
  """
  label = np.asarray(label)
  if label.ndim == 2:
    label = label[..., None]
  if label.shape[-1] == 1:  # A mask: white, opacity = mask value.
    label = np.concatenate([np.full(label.shape[:2] + (3,), 255, np.uint8), label], -1)
  if label.shape[-1] == 3:
    label = np.concatenate([label, np.full(label.shape[:2] + (1,), 255, label.dtype)], -1)
  lab = label.astype(np.float32)
  ys, xs = np.nonzero(lab[..., 3] > 0)
  points = np.stack([xs, ys], -1).astype(np.float32)
  values = np.concatenate([lab[ys, xs, :3] / 127.5 - 1.0, lab[ys, xs, 3:4] / 255.0], -1)
  return points, values
