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

import jax
import jax.numpy as jnp
import numpy as np

from jaxgeal.align.blend import blend_alpha  # noqa: F401  (re-exported: it lived here before blend.py)

Array = jax.Array


def window_radius(sigma_max: float) -> int:
  """Static half-width of the splat window: ±2σ rounded up (upstream's kernel bounds)."""
  return max(1, int(math.ceil(2.0 * float(sigma_max))))


def splat(
  points: Array, values: Array, size: int, sigma, valid: Array | None = None, radius: int | None = None
) -> tuple[Array, Array]:
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


def label_rgba(label) -> np.ndarray:
  """A congealed label -> (L, L, 4) uint8 RGBA, the one reading of every label form (API and CLI alike).

  * (L, L, 4) RGBA as it is; (L, L, 3) RGB: every pixel opaque;
  * (L, L) or (L, L, 1) grayscale: a *mask* - white where labelled, the gray value its opacity (alpha), so
    black is unlabelled and a soft mask gives soft edges;
  * (L, L, 2) gray + alpha: gray colour, that alpha.
  uint8 values (bool masks: True = 255; uint16: the high byte). The label covers the whole square
  congealed frame, so it must be square; any side L works (its pixels map onto the frame by scale).
  """
  label = np.asarray(label)
  if label.dtype == np.bool_:
    label = label.astype(np.uint8) * 255
  elif label.dtype == np.uint16:
    label = (label >> 8).astype(np.uint8)
  elif label.dtype != np.uint8:
    raise ValueError(f"a label must be uint8 (or bool / uint16) pixels, got dtype {label.dtype}")
  if label.ndim == 2:
    label = label[..., None]
  if label.ndim != 3 or label.shape[-1] not in (1, 2, 3, 4):
    raise ValueError(
      f"a label must be (L, L) grayscale, (L, L, 2) gray + alpha, (L, L, 3) RGB or (L, L, 4) RGBA; "
      f"got shape {label.shape}"
    )
  h, w = label.shape[:2]
  if h != w or h == 0:
    raise ValueError(f"a label must be square (L x L pixels, any L: it covers the whole congealed frame), got {w}x{h}")
  c = label.shape[-1]
  opaque = np.full((h, w, 1), 255, np.uint8)
  if c == 1:  # A mask: white, opacity = mask value.
    return np.concatenate([np.full((h, w, 3), 255, np.uint8), label], -1)
  if c == 2:
    return np.concatenate([np.repeat(label[..., :1], 3, -1), label[..., 1:]], -1)
  if c == 3:
    return np.concatenate([label, opaque], -1)
  return label


def load_label(path) -> np.ndarray:
  """Reads a label image file as `label_rgba` reads arrays: grayscale files are masks (alpha = gray value).

  Raises ValueError naming the file when it is unreadable or not a square label.
  """
  from PIL import Image

  from jaxgeal import images as images_lib

  try:
    with Image.open(path) as im:
      if im.mode in ("1", "L"):
        arr = np.asarray(im.convert("L"))
      elif im.mode.startswith("I") or im.mode == "F":  # 16-bit / 32-bit grayscale: scaled to 8 bits.
        arr = np.asarray(images_lib.to_rgb(im))[..., 0]
      elif im.mode == "LA":
        arr = np.asarray(im)
      elif "A" in im.mode or "transparency" in im.info:
        arr = np.asarray(im.convert("RGBA"))
      else:
        arr = np.asarray(im.convert("RGB"))
  except (OSError, SyntaxError, ValueError) as e:
    raise ValueError(f"cannot read label {path}: {e}") from e
  try:
    return label_rgba(arr)
  except ValueError as e:
    raise ValueError(f"label {path}: {e}") from None


def label_points(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Points and values of a congealed label (upstream's dense-label format, §1.11).

  Args:
    label: (L, L, 4) uint8 RGBA, or any form `label_rgba` reads ((L, L, 3) RGB: opaque; (L, L) mask: white,
      alpha = mask value).

  Returns:
    (points (P, 2) (x, y) pixels with alpha > 0, values (P, 4): RGB in [-1, 1], alpha in [0, 1]).
  """
  lab = label_rgba(label).astype(np.float32)
  ys, xs = np.nonzero(lab[..., 3] > 0)
  points = np.stack([xs, ys], -1).astype(np.float32)
  values = np.concatenate([lab[ys, xs, :3] / 127.5 - 1.0, lab[ys, xs, 3:4] / 255.0], -1)
  return points, values
