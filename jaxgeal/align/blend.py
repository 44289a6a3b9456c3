"""Compositing propagated RGBA edits over images (GANgealing §4.3 "mixed reality"; upstream --blend_alg).

Upstream's mixed_reality.py composites the splatted edit either by plain alpha blending or by Laplacian
blending (Burt & Adelson 1983; upstream utils/laplacian_blending.py). The splatted layer ends abruptly where
the last Gaussian of the label lands (±2σ around its outermost point), so alpha blending leaves a hard seam;
Laplacian blending mixes each frequency band with a mask blurred to that band's scale, so low frequencies
(shading, colour) cross the seam over a wide band while fine detail stays sharp.

    out = blend_alpha(images, rgba, opacity)                 # images·(1-a) + rgb·a, a = alpha·opacity
    out = blend_laplacian(images, rgba, opacity, levels=5)   # per-band blend of Laplacian pyramids
    out = blend(images, rgba, opacity, method="laplacian")

Images are (B, H, W, 3) in [-1, 1]; rgba is (B, H, W, 4) with colours in [-1, 1] and alpha in [0, 1] (what
`splat` returns). Upstream blurs at full resolution (a "stack" with ever wider Gaussians, kernels up to 45
taps); here the pyramid is a true one (5-tap binomial REDUCE / EXPAND, half resolution per level), which is
the same decomposition at a fraction of the cost and with static shapes for jit. Sides that are not divisible
by 2^(levels-1) are edge-padded up to the next multiple and the result cropped back.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

Array = jax.Array
METHODS = ("alpha", "laplacian")
DEFAULT_LEVELS = 5
# Burt & Adelson's binomial generating kernel (a = 0.375): REDUCE blurs with it, EXPAND with twice it on
# the zero-stuffed signal, so that every output pixel's weights sum to one.
_KERNEL = (1.0 / 16, 4.0 / 16, 6.0 / 16, 4.0 / 16, 1.0 / 16)


def blend_alpha(images: Array, rgba: Array, opacity: float = 0.75) -> Array:
  """Alpha-composites propagated (B, H, W, 4) RGBA (colours in [-1, 1], alpha in [0, 1]) over images."""
  a = jnp.clip(rgba[..., 3:4], 0.0, 1.0) * opacity
  return images * (1.0 - a) + rgba[..., :3] * a


def _blur_axis(x: Array, axis: int, scale: float = 1.0) -> Array:
  """5-tap binomial filter along axis 1 or 2, mirrored at the borders (numpy 'reflect': edge not repeated)."""
  n = x.shape[axis]
  pad = [(0, 0)] * x.ndim
  pad[axis] = (2, 2)
  xp = jnp.pad(x, pad, mode="reflect" if n > 2 else "edge")
  out = 0.0
  for k, w in enumerate(_KERNEL):
    out = out + (w * scale) * jax.lax.slice_in_dim(xp, k, k + n, axis=axis)
  return out


def reduce(x: Array) -> Array:
  """One pyramid step down: blur, keep every second row and column ((B, H, W, C) -> (B, H/2, W/2, C))."""
  x = _blur_axis(_blur_axis(x, 1), 2)
  return x[:, ::2, ::2]


def _expand_axis(x: Array, axis: int) -> Array:
  # Zero-stuffing then filtering with 2·kernel interpolates the missing samples; with mirrored borders every
  # output's taps sum to one (even positions: 1/8 + 6/8 + 1/8, odd: 4/8 + 4/8), also at the last pixel.
  shape = list(x.shape)
  shape[axis] *= 2
  idx = [slice(None)] * x.ndim
  idx[axis] = slice(0, None, 2)
  up = jnp.zeros(shape, x.dtype).at[tuple(idx)].set(x)
  return _blur_axis(up, axis, scale=2.0)


def expand(x: Array) -> Array:
  """One pyramid step up ((B, h, w, C) -> (B, 2h, 2w, C)), the interpolating inverse of `reduce`'s decimation."""
  return _expand_axis(_expand_axis(x, 1), 2)


def gaussian_pyramid(x: Array, levels: int) -> list[Array]:
  """[x, reduce(x), reduce²(x), ...]: `levels` arrays; sides must be divisible by 2^(levels-1)."""
  pyr = [x]
  for _ in range(levels - 1):
    pyr.append(reduce(pyr[-1]))
  return pyr


def laplacian_pyramid(x: Array, levels: int) -> list[Array]:
  """Band-pass levels G_k - expand(G_{k+1}) and the coarsest Gaussian level last; `collapse` inverts it exactly."""
  g = gaussian_pyramid(x, levels)
  return [g[k] - expand(g[k + 1]) for k in range(levels - 1)] + [g[-1]]


def collapse(pyramid: list[Array]) -> Array:
  """Sums a Laplacian pyramid back into an image (exact inverse of `laplacian_pyramid` for any EXPAND)."""
  out = pyramid[-1]
  for band in reversed(pyramid[:-1]):
    out = band + expand(out)
  return out


def max_levels(h: int, w: int) -> int:
  """Most levels whose coarsest level is >= 2 pixels a side (the mirrored 5-tap filters need 2)."""
  return max(1, int(math.floor(math.log2(min(h, w) / 2.0))) + 1) if min(h, w) >= 2 else 1


def _pad_to_multiple(x: Array, multiple: int) -> Array:
  h, w = x.shape[1:3]
  ph, pw = -h % multiple, -w % multiple
  if ph or pw:  # Edge padding: constant extension adds no band-pass energy at the padded border.
    x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
  return x


@functools.partial(jax.jit, static_argnames=("levels",))
def blend_laplacian(images: Array, rgba: Array, opacity=0.75, levels: int = DEFAULT_LEVELS) -> Array:
  """Laplacian-pyramid blending of a propagated RGBA edit into images.

  Args:
    images: (B, H, W, 3) images in [-1, 1] (any H, W).
    rgba: (B, H, W, 4) propagated colours in [-1, 1] and alpha in [0, 1].
    opacity: scales alpha, as in `blend_alpha` (traced: changing it does not recompile).
    levels: pyramid levels (static); 1 is exactly `blend_alpha`. Each level halves the resolution, so the
      transition band is about 2^levels pixels wide. Capped so that the coarsest level keeps >= 2 pixels.

  Returns:
    (B, H, W, 3) in [-1, 1]. The mask m = alpha·opacity is blended per band: L_k(out) =
    G_k(m)·L_k(edit) + (1 - G_k(m))·L_k(images), then collapsed. Where nothing was splatted (alpha = 0) the
    edit has no colour (splat leaves 0, mid grey); it is filled with the image there, so the coarse bands do
    not drag grey into the seam (upstream extends the object's border for the same reason). Hence alpha = 1
    gives the edit, alpha = 0 the image and levels = 1 alpha blending. A sum of mixed bands can overshoot
    slightly: the result is clipped to [-1, 1].
  """
  if levels < 1:
    raise ValueError(f"levels must be >= 1, got {levels}")
  images = jnp.asarray(images, jnp.float32)
  rgba = jnp.asarray(rgba, jnp.float32)
  h, w = images.shape[1:3]
  levels = min(levels, max_levels(h, w))
  alpha = jnp.clip(rgba[..., 3:4], 0.0, 1.0)
  edit = jnp.where(alpha > 0, rgba[..., :3], images)
  mask = alpha * opacity
  multiple = 2 ** (levels - 1)
  x = _pad_to_multiple(jnp.concatenate([images, edit, mask], -1), multiple)
  # One pyramid pass over [image | edit | mask] channels: the three decompositions share every op.
  gauss = gaussian_pyramid(x, levels)
  bands = []
  for k in range(levels):
    band = gauss[k] if k == levels - 1 else gauss[k] - expand(gauss[k + 1])
    m = gauss[k][..., 6:7]  # The mask's *Gaussian* level: blurred to the band's scale.
    bands.append(band[..., 0:3] * (1.0 - m) + band[..., 3:6] * m)
  return jnp.clip(collapse(bands)[:, :h, :w], -1.0, 1.0)


def blend(images: Array, rgba: Array, opacity=0.75, method: str = "alpha", levels: int = DEFAULT_LEVELS) -> Array:
  """Composites a propagated RGBA edit over images with `method` in METHODS ('alpha' or 'laplacian')."""
  if method == "alpha":
    return blend_alpha(jnp.asarray(images), jnp.asarray(rgba), opacity)
  if method == "laplacian":
    return blend_laplacian(images, rgba, opacity, levels=int(levels))
  raise ValueError(f"blend must be one of {METHODS}, got {method!r}")
