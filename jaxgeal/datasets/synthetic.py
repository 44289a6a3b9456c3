"""A synthetic object category with exact ground truth: procedural cartoon animal heads.

PCK-Transfer (Peebles et al., "GAN-Supervised Dense Visual Alignment", CVPR 2022, Sec. 4.2 and App. B.7)
is measured on SPair-71K and CUB: images of one category with named key points, a left/right mirror
permutation, fixed or random pairs and per-image thresholds. Those datasets cannot be shipped here, and their
annotations are only as exact as their annotators. This module renders a category whose ground truth is exact
by construction, in the same annotation structure:

* A canonical object (a cartoon animal head: face, ears with inner ears, muzzle, eyes with pupils and
  highlights, nose, mouth, a fur texture of stripes / spots / noise, and optionally two markings on its left
  side, an eye patch and a bow) is defined analytically in a canonical frame (units of about one head radius,
  x right, y down). Its 13 named key points are laid out bilaterally symmetric: mirroring the canonical frame
  (x -> -x) maps key point i onto key point `MIRROR_PERMUTATION[i]`. "left" means smaller canonical x.
* Each image draws a warp canonical -> image (`Warp`): a smooth non-rigid deformation (four low-frequency
  sinusoids whose summed Lipschitz constant is `deformation` < 1, so the map is a diffeomorphism with an exact
  inverse) followed by a similarity (rotation, scale, translation) and optionally a horizontal mirror.
* Rendering inverse-warps: every supersampled output pixel is sent to the canonical frame and the canonical
  object is shaded there; samples are box-filtered (anti-aliasing). Key points are the forward map of the
  canonical key points, so they follow the rendered object exactly (the tests check this to sub-pixel level).
* Appearance varies per image: colours, fur texture, lighting gradient, backgrounds (gradient + value noise +
  clutter shapes behind the object) and optional occluders in front of it (which hide key points).
* Options make harder categories from the same draws: close-ups (two framings), two poses leaning left and right
  (`rotation_offset`, in equal or unequal shares: `clockwise_prob`), and one individual's look for every image
  (`appearance_of`), for the paper's question of when its mean latent is a poor congealing target (App. D).

Mirroring (as upstream `match_flows` assumes for real categories): the mirrored render is exactly the
horizontally flipped unmirrored render, and its annotation is the flipped annotation relabelled through the
permutation, `kp_m[i] = (W - 1 - x, y)[perm[i]]` - the creature drawn is the mirror twin (markings on its
right side). Its warp is `flip o F o reflect`, still a diffeomorphism of the canonical frame that carries
canonical key point i to annotated key point i, so transferring A -> canonical -> B is exact for every pair.

Randomness is deterministic per (seed, index) and every random number is drawn whatever the options, so
changing an option (e.g. `deformation=0`, `mirror=True`, another `size`) changes only what it names.
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
import json
import os
import pathlib
from collections.abc import Callable, Sequence

import numpy as np

from jaxgeal import images as image_io
from jaxgeal.evaluation import pck

KEYPOINT_NAMES = (
  "left_ear_tip",
  "right_ear_tip",
  "forehead",
  "left_eye_outer",
  "left_eye",
  "right_eye",
  "right_eye_outer",
  "left_cheek",
  "right_cheek",
  "nose",
  "left_mouth_corner",
  "right_mouth_corner",
  "chin",
)
CANONICAL_KEYPOINTS = np.array(
  [
    (-0.55, -0.88),
    (0.55, -0.88),
    (0.0, -0.50),
    (-0.37, -0.05),
    (-0.24, -0.05),
    (0.24, -0.05),
    (0.37, -0.05),
    (-0.62, 0.05),
    (0.62, 0.05),
    (0.0, 0.17),
    (-0.16, 0.30),
    (0.16, 0.30),
    (0.0, 0.60),
  ]
)
MIRROR_PERMUTATION = np.array([1, 0, 2, 6, 5, 4, 3, 8, 7, 9, 11, 10, 12])
CATEGORY = "synthetic_heads"

_HEAD_CENTRE = np.array([0.0, -0.14])  # Canonical point placed near the image centre (mid ear tip to chin).
_NUM_WAVES = 4  # Sinusoids of the deformation.
_MAX_CLUTTER = 6  # Background shapes.
_MAX_SPOTS = 8


@dataclasses.dataclass(frozen=True)
class Warp:
  """The exact map between the canonical frame and one rendered image (pixel centres at integers).

  Unmirrored: `image = centre + scale * R(angle) q` where `canonical = q + sum_k amp_k sin(freq_k . q + phase_k)`.
  Mirrored: `flip o (that) o reflect`, with `flip(x, y) = (size - 1 - x, y)` and `reflect(x, y) = (-x, y)`.
  """

  size: int
  angle: float  # Radians.
  scale: float  # Pixels per canonical unit.
  centre: tuple  # Image position of the canonical origin (before mirroring).
  freqs: np.ndarray  # (K, 2) rad per canonical unit.
  phases: np.ndarray  # (K,)
  amps: np.ndarray  # (K, 2) canonical units.
  mirrored: bool

  def _deform(self, q):
    arg = q @ self.freqs.T + self.phases  # (..., K)
    return np.sin(arg) @ self.amps

  def to_canonical(self, points) -> np.ndarray:
    """Image pixel coordinates (..., 2) -> canonical coordinates (closed form)."""
    p = np.asarray(points, np.float64)
    if self.mirrored:
      p = p * [-1.0, 1.0] + [self.size - 1.0, 0.0]
    c, s = np.cos(self.angle), np.sin(self.angle)
    d = p - np.asarray(self.centre)
    q = np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], -1) / self.scale
    out = q + self._deform(q)
    return out * [-1.0, 1.0] if self.mirrored else out

  def to_image(self, points, tol: float = 1e-12, max_iters: int = 200) -> np.ndarray:
    """Canonical coordinates (..., 2) -> image pixel coordinates (the forward map; key points use it).

    Inverts `c = q + d(q)` by the fixed-point iteration `q <- c - d(q)`, a contraction because the
    Lipschitz constant of `d` is below 1 (error shrinks by that factor per step).
    """
    cpt = np.asarray(points, np.float64)
    if self.mirrored:
      cpt = cpt * [-1.0, 1.0]
    q = cpt.copy()
    for _ in range(max_iters):
      q_new = cpt - self._deform(q)
      done = np.max(np.abs(q_new - q), initial=0.0) < tol
      q = q_new
      if done:
        break
    c, s = np.cos(self.angle), np.sin(self.angle)
    p = np.stack([c * q[..., 0] - s * q[..., 1], s * q[..., 0] + c * q[..., 1]], -1) * self.scale
    p = p + np.asarray(self.centre)
    return p * [-1.0, 1.0] + [self.size - 1.0, 0.0] if self.mirrored else p

  __call__ = to_image

  def canonical_grid(self) -> np.ndarray:
    """(size, size, 2) canonical coordinates of every pixel centre (the dense inverse warp)."""
    ys, xs = np.mgrid[0 : self.size, 0 : self.size].astype(np.float64)
    return self.to_canonical(np.stack([xs, ys], -1))

  def to_json(self) -> dict:
    return dict(
      size=self.size,
      angle=self.angle,
      scale=self.scale,
      centre=list(self.centre),
      freqs=self.freqs.tolist(),
      phases=self.phases.tolist(),
      amps=self.amps.tolist(),
      mirrored=self.mirrored,
    )

  @classmethod
  def from_json(cls, d: dict) -> Warp:
    return cls(
      size=int(d["size"]),
      angle=float(d["angle"]),
      scale=float(d["scale"]),
      centre=tuple(float(v) for v in d["centre"]),
      freqs=np.asarray(d["freqs"], np.float64),
      phases=np.asarray(d["phases"], np.float64),
      amps=np.asarray(d["amps"], np.float64),
      mirrored=bool(d["mirrored"]),
    )


def transfer_points(warp_a: Warp, warp_b: Warp, points) -> np.ndarray:
  """Exact dense correspondence: points of image A -> canonical frame -> image B."""
  return warp_b.to_image(warp_a.to_canonical(points))


def mirror_keypoints(keypoints, width: int, permutation=MIRROR_PERMUTATION) -> np.ndarray:
  """Annotation of the horizontally flipped image: `x -> width - 1 - x`, labels relabelled by `permutation`."""
  return pck.mirror_keypoints(keypoints, width, permutation)


# ---------------------------------------------------------------------------------------------------------
# Random parameters. Everything is drawn in a fixed order and in size-free units.
# ---------------------------------------------------------------------------------------------------------


def _colour(rng, sat=(0.1, 0.8), val=(0.2, 0.95)) -> np.ndarray:
  return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*sat), rng.uniform(*val)), np.float32)


def _draw(rng) -> dict:
  """All random numbers of one image (options are applied afterwards, so they never reshuffle these)."""
  r = {}
  r["mirror_u"] = rng.uniform()
  r["angle_u"], r["scale_u"] = rng.uniform(-1, 1), rng.uniform()
  r["shift_u"] = rng.uniform(-1, 1, 2)
  theta = rng.uniform(0, 2 * np.pi, _NUM_WAVES)
  r["freqs"] = rng.uniform(1.0, 3.0, _NUM_WAVES)[:, None] * np.stack([np.cos(theta), np.sin(theta)], -1)
  r["phases"] = rng.uniform(0, 2 * np.pi, _NUM_WAVES)
  beta = rng.uniform(0, 2 * np.pi, _NUM_WAVES)
  r["amp_dirs"] = np.stack([np.cos(beta), np.sin(beta)], -1) * rng.uniform(0.5, 1.0, _NUM_WAVES)[:, None]
  # Object appearance.
  r["fur"], r["fur2"] = _colour(rng), _colour(rng)
  r["inner_ear"], r["muzzle"] = _colour(rng, (0.2, 0.6), (0.6, 1.0)), _colour(rng, (0.0, 0.3), (0.6, 1.0))
  r["iris"], r["nose"] = _colour(rng, (0.4, 1.0), (0.3, 0.9)), _colour(rng, (0.2, 0.7), (0.1, 0.5))
  r["patch"], r["bow"] = _colour(rng, (0.0, 0.6), (0.05, 0.4)), _colour(rng, (0.7, 1.0), (0.7, 1.0))
  r["texture_kind"] = rng.integers(4)  # plain, stripes, spots, noise
  r["texture_strength"] = rng.uniform(0.4, 0.9)
  r["stripe"] = (
    rng.uniform(9, 18),
    rng.uniform(-0.5, 0.5) + np.pi / 2,
    rng.uniform(0, 2 * np.pi),
    rng.uniform(-0.3, 0.4),
  )
  r["spots"] = np.concatenate(
    [rng.uniform([-0.6, -0.8], [0.6, 0.55], (_MAX_SPOTS, 2)), rng.uniform(0.04, 0.13, (_MAX_SPOTS, 1))], 1
  )
  r["fur_noise"] = rng.uniform(0, 1, (7, 7, 1)).astype(np.float32)
  r["light"] = rng.uniform(-0.35, 0.35, 2)
  # Background (image units: fractions of the image size).
  r["bg1"], r["bg2"] = _colour(rng, (0.0, 0.9), (0.1, 1.0)), _colour(rng, (0.0, 0.9), (0.1, 1.0))
  r["bg_dir"] = rng.uniform(0, 2 * np.pi)
  r["bg_noise"] = rng.uniform(-1, 1, (rng.integers(3, 9),) * 2 + (3,)).astype(np.float32)
  r["bg_noise_amp"] = rng.uniform(0.0, 0.3)
  r["num_clutter"] = rng.integers(0, _MAX_CLUTTER + 1)
  r["clutter"] = [
    (
      rng.integers(2),
      rng.uniform(0, 1, 2),
      rng.uniform(0.04, 0.25, 2),
      rng.uniform(0, np.pi),
      _colour(rng, (0.0, 1.0), (0.1, 1.0)),
    )
    for _ in range(_MAX_CLUTTER)
  ]
  # Occluder (a bar in front of the object).
  r["occluder_u"] = rng.uniform()
  r["occluder"] = (
    1,
    rng.uniform(0.3, 0.7, 2),
    np.array([rng.uniform(0.2, 0.45), rng.uniform(0.03, 0.07)]),
    rng.uniform(0, np.pi),
    _colour(rng, (0.0, 1.0), (0.1, 1.0)),
  )
  # Close-up or full view (drawn last: options added later must not reshuffle the draws above).
  r["closeup_u"] = rng.uniform()
  return r


# The draws that place and shape the head; `appearance_of` keeps these per image and takes the rest.
_POSE_DRAWS = ("mirror_u", "angle_u", "scale_u", "shift_u", "freqs", "phases", "amp_dirs", "closeup_u")


def _make_warp(
  r, size, deformation, max_rotation, scale_range, max_translation, mirrored, rotation_offset=0.0, clockwise_prob=0.5
) -> Warp:
  if rotation_offset:
    # Two rotation modes: the uniform number u in [-1, 1] below b = 1 - 2 clockwise_prob picks the negative
    # mode, above it the positive one; its distance from b (rescaled to [0, 1]) is the angle within
    # [offset - max_rotation, offset + max_rotation]. For clockwise_prob 0.5 (b = 0) these are exactly sign(u)
    # and |u|. Offset 0 keeps the single mode below.
    u, b = r["angle_u"], 1 - 2 * clockwise_prob
    sign, mag = (-1.0, (b - u) / (1 + b)) if u < b else (1.0, (u - b) / (1 - b))
    angle = sign * np.deg2rad(rotation_offset + max_rotation * (2 * mag - 1))
  else:
    angle = np.deg2rad(max_rotation) * r["angle_u"]
  scale = size * (scale_range[0] + (scale_range[1] - scale_range[0]) * r["scale_u"])
  # Place the head centre at the image centre plus a shift; the canonical origin lies below it.
  c, s = np.cos(angle), np.sin(angle)
  head = scale * np.array([c * _HEAD_CENTRE[0] - s * _HEAD_CENTRE[1], s * _HEAD_CENTRE[0] + c * _HEAD_CENTRE[1]])
  centre = (size - 1) / 2 + max_translation * size * r["shift_u"] - head
  # Amplitudes scaled so that sum_k |amp_k| |freq_k| <= deformation: the Lipschitz bound of the field.
  weights = r["amp_dirs"] / np.linalg.norm(r["freqs"], axis=1, keepdims=True)
  norm = np.sum(np.linalg.norm(r["amp_dirs"], axis=1))
  return Warp(
    size=size,
    angle=float(angle),
    scale=float(scale),
    centre=(float(centre[0]), float(centre[1])),
    freqs=r["freqs"],
    phases=r["phases"],
    amps=deformation * weights / norm,
    mirrored=bool(mirrored),
  )


# ---------------------------------------------------------------------------------------------------------
# Shading (vectorised over all samples; float32).
# ---------------------------------------------------------------------------------------------------------


def _ellipse(x, y, cx, cy, rx, ry):
  return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


def _triangle(x, y, tri):
  (x0, y0), (x1, y1), (x2, y2) = tri
  d0 = (x1 - x0) * (y - y0) - (y1 - y0) * (x - x0)
  d1 = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)
  d2 = (x0 - x2) * (y - y2) - (y0 - y2) * (x - x2)
  return ((d0 >= 0) & (d1 >= 0) & (d2 >= 0)) | ((d0 <= 0) & (d1 <= 0) & (d2 <= 0))


def _shape(x, y, shape):
  """A rotated ellipse (kind 0) or rectangle (kind 1) with centre, half sizes, angle; unit = image size."""
  kind, (cx, cy), (hx, hy), ang, _ = shape
  cx, cy, hx, hy = (np.float32(v) for v in (cx, cy, hx, hy))  # Keep the dense path float32.
  c, s = np.float32(np.cos(ang)), np.float32(np.sin(ang))
  u, v = c * (x - cx) + s * (y - cy), -s * (x - cx) + c * (y - cy)
  if kind == 0:
    return (u / hx) ** 2 + (v / hy) ** 2 <= 1.0
  return (np.abs(u) <= hx) & (np.abs(v) <= hy)


def _hat_weights(t, g: int):
  """(N, g + 1) linear-interpolation weights of positions t in [0, 1] (clamped) on g + 1 evenly spaced knots."""
  f = np.clip(t, 0, 1)[:, None] * np.float32(g)
  return np.maximum(0, 1 - np.abs(f - np.arange(g + 1, dtype=np.float32)))


_EAR = ((0.55, -0.88), (0.12, -0.40), (0.58, -0.15))  # Right ear (x > 0); the left is its mirror via |x|.
_INNER_EAR = ((0.50, -0.76), (0.24, -0.44), (0.52, -0.28))
# Flat-coloured parts, painted in this order over the (textured) fur; indices into the palette of `_shade_head`.
_FUR, _INNER, _MUZZLE, _PATCH, _SCLERA, _IRIS, _PUPIL, _HIGHLIGHT, _NOSE, _MOUTH, _BOW = range(11)


def _fur_texture(x, y, r):
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
    wx, wy = _hat_weights((x + 1) / 2, grid.shape[1] - 1), _hat_weights((y + 1) / 2, grid.shape[0] - 1)
    t = np.clip((np.sum((wy @ grid) * wx, axis=1) - 0.5) * 3 + 0.5, 0, 1)
  else:
    return np.zeros_like(x)
  return t * np.float32(r["texture_strength"])


def _shade_head(x, y, r, asymmetric):
  """The canonical creature at canonical points: (N, 3) colours in [0, 1] and the (N,) silhouette.

  Parts are painted as integer labels on flat arrays and coloured by one palette lookup at the end (much
  faster than compositing (N, 3) colour arrays part by part).
  """
  ax = np.abs(x)  # Bilateral parts are tested once on |x|.
  face = _ellipse(x, y, 0.0, 0.05, 0.62, 0.55)
  silhouette = face | _triangle(ax, y, _EAR)
  label = np.where(_triangle(ax, y, _INNER_EAR) & ~face, _INNER, _FUR).astype(np.int8)

  def paint(mask, part):
    np.copyto(label, np.int8(part), where=mask)

  paint(_ellipse(x, y, 0.0, 0.27, 0.30, 0.19), _MUZZLE)
  if asymmetric:  # Markings on the creature's left only: they make mirrored renders distinguishable.
    paint(_ellipse(x, y, -0.24, -0.07, 0.20, 0.16), _PATCH)
  ex, ey = ax - 0.24, y + 0.05
  e2 = ex * ex + ey * ey
  paint((ex / 0.13) ** 2 + (ey / 0.10) ** 2 <= 1, _SCLERA)
  paint(e2 <= 0.075**2, _IRIS)
  paint(e2 <= 0.04**2, _PUPIL)
  hx = np.where(x < 0, x + 0.21, x - 0.27)  # Highlight up-right of each pupil (same side in both eyes).
  paint(hx * hx + (y + 0.08) ** 2 <= 0.022**2, _HIGHLIGHT)
  paint(_ellipse(x, y, 0.0, 0.17, 0.085, 0.06), _NOSE)
  rho = np.sqrt((x / 0.16) ** 2 + ((y - 0.30) / 0.10) ** 2)
  paint((np.abs(rho - 1) <= 0.2) & (y >= 0.30) | ((ax <= 0.012) & (y >= 0.2) & (y <= 0.40)), _MOUTH)
  if asymmetric:
    bow = _triangle(x, y, ((-0.28, -0.47), (-0.45, -0.58), (-0.45, -0.36))) | _triangle(
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
  t = _fur_texture(x[fur], y[fur], r)[:, None]
  col[fur] = r["fur"] * (1 - t) + r["fur2"] * t
  return col, silhouette


def _background(r, size: int, ss: int, u, v):
  """(N, 3) background colours at the supersample grid; (u, v) are its flat positions in image-size units."""
  t = (np.arange(size * ss, dtype=np.float32) + 0.5) / (ss * size) - 0.5 / size  # 1-D axis, image units.
  d = np.array([np.cos(r["bg_dir"]), np.sin(r["bg_dir"])], np.float32)
  w = np.clip((t[None, :] - 0.5) * d[0] + (t[:, None] - 0.5) * d[1] + 0.5, 0, 1).reshape(-1, 1)
  g = r["bg_noise"].shape[0] - 1
  wt = _hat_weights(t, g)  # The noise is separable on the regular grid: two small matrix products.
  rows = np.tensordot(wt, r["bg_noise"], axes=(1, 0))  # (y, i, c)
  noise = np.matmul(wt[None], rows).reshape(-1, 3)  # (y, x, c)
  col = r["bg1"] * (1 - w) + r["bg2"] * w + np.float32(r["bg_noise_amp"]) * noise
  shapes = r["clutter"][: r["num_clutter"]]
  if shapes:
    label = np.full(len(u), -1, np.int8)
    for i, shape in enumerate(shapes):
      np.copyto(label, np.int8(i), where=_shape(u, v, shape))
    hit = np.flatnonzero(label >= 0)
    col[hit] = np.stack([s[-1] for s in shapes])[label[hit]]
  return col


@functools.lru_cache(maxsize=8)
def _sample_grid(size: int, ss: int):
  """Supersample positions (pixel units; pixel i covers [i - 1/2, i + 1/2]) as flat float32 x, y arrays."""
  t = ((np.arange(size * ss) + 0.5) / ss - 0.5).astype(np.float32)
  y, x = np.meshgrid(t, t, indexing="ij")
  x, y = x.ravel(), y.ravel()
  x.flags.writeable = y.flags.writeable = False
  return x, y


def _inverse_warp_f32(warp: Warp, x, y):
  """The unmirrored `to_canonical` of `warp` on flat float32 arrays (the dense rendering path)."""
  c, s = np.float32(np.cos(warp.angle)), np.float32(np.sin(warp.angle))
  dx, dy = x - np.float32(warp.centre[0]), y - np.float32(warp.centre[1])
  inv = np.float32(1.0 / warp.scale)
  qx, qy = (c * dx + s * dy) * inv, (c * dy - s * dx) * inv
  cx, cy = qx.copy(), qy.copy()
  for (fx, fy), ph, (ax_, ay_) in zip(warp.freqs, warp.phases, warp.amps):
    wave = np.sin(np.float32(fx) * qx + np.float32(fy) * qy + np.float32(ph))
    cx += np.float32(ax_) * wave
    cy += np.float32(ay_) * wave
  return cx, cy


def _box(a, size, ss):
  return a.reshape(size, ss, size, ss, -1).mean(axis=(1, 3))


def render(
  seed: int,
  index: int,
  size: int = 64,
  *,
  mirror: bool | None = None,
  mirror_prob: float = 0.5,
  deformation: float = 0.3,
  max_rotation: float = 20.0,
  scale_range: Sequence[float] = (0.30, 0.42),
  max_translation: float = 0.08,
  asymmetric: bool = True,
  occluder_prob: float = 0.0,
  max_clutter: int = _MAX_CLUTTER,
  closeup_prob: float = 0.0,
  closeup_scale: Sequence[float] = (0.60, 0.80),
  rotation_offset: float = 0.0,
  clockwise_prob: float = 0.5,
  appearance_of: Sequence[int] | None = None,
  supersample: int = 2,
  shader: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict:
  """Render image `index` of the category drawn with `seed`.

  Args:
    seed, index: determine every random choice (independently per index).
    size: output is size x size.
    mirror: force (True/False) the horizontal mirror; None draws it with probability `mirror_prob`.
    deformation: Lipschitz bound of the non-rigid displacement field, in [0, 1); 0 = pure similarity.
    max_rotation: degrees; rotation is uniform in [-max_rotation, max_rotation].
    scale_range: pixels per canonical unit as fractions of `size` (the head is ~1.5 units tall).
    max_translation: maximum shift of the head centre from the image centre, fraction of `size`.
    asymmetric: draw the left-side markings (eye patch, bow); without them the creature is mirror symmetric.
    occluder_prob: probability of a bar in front of the object; key points under it are invisible.
    max_clutter: at most this many background shapes (0..6; the drawn count is clipped, so other choices
      stay the same).
    closeup_prob: probability of a close-up: the scale is drawn from `closeup_scale` instead of `scale_range`
      (same uniform number), so the head overfills the frame and ears and chin are cut off (their key points
      invisible). Mixing both makes a category of two framings, as LSUN Cats mixes full bodies and upper bodies.
    closeup_scale: the close-ups' scale range, as `scale_range`.
    rotation_offset: degrees; if non-zero, a category of two poses: the head leans left or right (equally
      likely), rotation uniform in +-[offset - max_rotation, offset + max_rotation], and no render is upright
      when offset > max_rotation. Its average pose is one that no image has (the paper's App. D: the mean
      latent may be an unsuitable congealing target).
    clockwise_prob: with `rotation_offset`, the fraction of heads rotated clockwise (positive angles; image y
      points down); 0.5 = both poses equally likely, 0.7 = a majority pose and a minority pose.
    appearance_of: (seed, index) of a render; if given, every image takes its colours, texture, lighting,
      background, clutter and occluder from that render, and only its pose and shape (similarity, deformation,
      mirror, framing) from `seed`, `index`: one individual in many poses (held-out seeds show the same one).
    supersample: samples per pixel along each axis (anti-aliasing).
    shader: if given, render `shader(canonical_points (N, 2) float32) -> (N, C)` through the same warp
      instead of the creature and background (markers, label maps, checkerboards); points are in this
      image's canonical frame (the one `warp.to_canonical` returns, mirror included).

  Returns:
    dict(image (size, size, 3) float32 in [-1, 1] (or (size, size, C) shader values), keypoints (P, 2) float32
    (x, y) pixels, visibility (P,) bool (inside the image and not occluded), bbox (4,) float32 x0, y0, x1, y1 of
    the object silhouette, mask (size, size) float32 silhouette coverage (amodal), mirrored bool, warp `Warp`).
  """
  if not 0.0 <= deformation < 1.0:
    raise ValueError(f"deformation must be in [0, 1) for the warp to be invertible, got {deformation}")
  if not 0 <= max_clutter <= _MAX_CLUTTER:
    raise ValueError(f"max_clutter must be in [0, {_MAX_CLUTTER}], got {max_clutter}")
  if not 0.0 < clockwise_prob < 1.0:
    raise ValueError(f"clockwise_prob must be in (0, 1), got {clockwise_prob}")
  r = _draw(np.random.default_rng([seed, index]))
  if appearance_of is not None:
    look = _draw(np.random.default_rng([int(i) for i in appearance_of]))
    r = {k: (r[k] if k in _POSE_DRAWS else look[k]) for k in r}
  r["num_clutter"] = min(r["num_clutter"], max_clutter)
  mirrored = (r["mirror_u"] < mirror_prob) if mirror is None else bool(mirror)
  if r["closeup_u"] < closeup_prob:
    scale_range = closeup_scale
  warp = _make_warp(
    r, size, deformation, max_rotation, scale_range, max_translation, mirrored, rotation_offset, clockwise_prob
  )
  # Everything is drawn unmirrored; a mirrored render is the flip of it (see the module docstring).
  plain = dataclasses.replace(warp, mirrored=False)
  x, y = _sample_grid(size, supersample)
  cx, cy = _inverse_warp_f32(plain, x, y)
  obj_col, silhouette = _shade_head(cx, cy, r, asymmetric)
  keypoints = plain.to_image(CANONICAL_KEYPOINTS)
  occluded = np.zeros(len(keypoints), bool)
  if shader is not None:
    canon = np.stack([-cx if mirrored else cx, cy], -1)
    image = _box(np.asarray(shader(canon), np.float32).reshape(len(x), -1), size, supersample)
  else:
    u, v = x / np.float32(size), y / np.float32(size)
    col = _background(r, size, supersample, u, v)
    obj = np.flatnonzero(silhouette)
    light = 1 + np.float32(r["light"][0]) * (u[obj] - 0.5) + np.float32(r["light"][1]) * (v[obj] - 0.5)
    col[obj] = obj_col[obj] * light[:, None]
    if r["occluder_u"] < occluder_prob:
      col = np.where(_shape(u, v, r["occluder"])[:, None], r["occluder"][-1], col)
      occluded = _shape(keypoints[:, 0] / size, keypoints[:, 1] / size, r["occluder"])
    image = _box(np.clip(col, 0, 1), size, supersample) * 2 - 1
  mask = _box(silhouette.astype(np.float32)[:, None], size, supersample)[..., 0]
  # Box of the silhouette samples and of the key points (which lie on the object: samples miss up to a
  # pixel of the sharp ear tips), clipped to the image.
  xs = np.concatenate([x[silhouette], keypoints[:, 0]])
  ys = np.concatenate([y[silhouette], keypoints[:, 1]])
  bbox = np.clip(np.array([xs.min(), ys.min(), xs.max(), ys.max()]), 0, size - 1)
  inside = np.all((keypoints >= -0.5) & (keypoints < size - 0.5), axis=-1)
  visibility = inside & ~occluded
  if mirrored:
    image, mask = image[:, ::-1], mask[:, ::-1]
    keypoints = mirror_keypoints(keypoints, size)
    visibility = visibility[MIRROR_PERMUTATION]
    bbox = np.array([size - 1 - bbox[2], bbox[1], size - 1 - bbox[0], bbox[3]])
  return dict(
    image=np.ascontiguousarray(image, np.float32),
    keypoints=keypoints.astype(np.float32),
    visibility=visibility,
    bbox=bbox.astype(np.float32),
    mask=np.ascontiguousarray(mask),
    mirrored=mirrored,
    warp=warp,
  )


def make_dataset(n: int, size: int = 64, seed: int = 0, *, num_pairs: int | None = None, **render_kwargs) -> dict:
  """Render images 0..n-1 of `seed` in the key point structure of `jaxgeal.datasets` (as SPair / CUB).

  Returns dict(images (n, size, size, 3) float32 in [-1, 1], keypoints (n, P, 2) float32, visibility (n, P)
  bool, bbox (n, 4) float32 x0, y0, x1, y1, pck_threshold (n,) float32 = max(bbox width, height) with
  threshold "bbox" (alpha_bbox, as SPair), mirrored (n,) bool, masks (n, size, size) float32, pairs
  (num_pairs, 2) int32 fixed source/target pairs (default n; never an image with itself), permutation (P,)
  int32, keypoint_names, canonical_keypoints (P, 2), category, warps (list of `Warp`, for exact transfers)).
  Unlike the stored SPair / CUB records (which zero them), invisible key points keep their exact (amodal)
  positions; evaluators ignore them either way.
  """
  if n < 2:
    raise ValueError(f"a PCK dataset needs at least 2 images, got n={n}")
  items = [render(seed, i, size, **render_kwargs) for i in range(n)]
  bbox = np.stack([it["bbox"] for it in items])
  prng = np.random.default_rng([seed, 0x5041495253])  # "PAIRS": a stream apart from every image's.
  m = n if num_pairs is None else int(num_pairs)
  src = prng.integers(0, n, m)
  pairs = np.stack([src, (src + prng.integers(1, n, m)) % n], 1).astype(np.int32)
  return dict(
    images=np.stack([it["image"] for it in items]),
    keypoints=np.stack([it["keypoints"] for it in items]),
    visibility=np.stack([it["visibility"] for it in items]),
    bbox=bbox,
    pck_threshold=np.maximum(bbox[:, 2] - bbox[:, 0], bbox[:, 3] - bbox[:, 1]).astype(np.float32),
    threshold="bbox",
    mirrored=np.array([it["mirrored"] for it in items]),
    masks=np.stack([it["mask"] for it in items]),
    pairs=pairs,
    permutation=MIRROR_PERMUTATION.astype(np.int32),
    keypoint_names=list(KEYPOINT_NAMES),
    canonical_keypoints=CANONICAL_KEYPOINTS.copy(),
    category=CATEGORY,
    warps=[it["warp"] for it in items],
  )


def write_folder(out_dir: str | os.PathLike, n: int, size: int = 64, seed: int = 0, **kwargs) -> pathlib.Path:
  """Write `make_dataset(n, size, seed, **kwargs)` as a plain image folder: `out_dir/000000.png, ...` plus
  `out_dir/annotations.json` (the PCK annotation format of `jaxgeal.evaluation.pck`, each image also
  carrying its exact `warp`). Returns the path of the annotations file."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  ds = make_dataset(n, size, seed, **kwargs)
  files = [f"{i:06d}.png" for i in range(n)]
  for name, image in zip(files, ds["images"]):
    image_io.save_image(out_dir / name, image)
  doc = pck.annotations_to_json(ds, files)
  doc.update(category=CATEGORY, generator=dict(module=__name__, n=n, size=size, seed=seed, options=kwargs))
  for entry, warp in zip(doc["images"], ds["warps"]):
    entry["warp"] = warp.to_json()
  path = out_dir / "annotations.json"
  path.write_text(json.dumps(doc, indent=1))
  return path
