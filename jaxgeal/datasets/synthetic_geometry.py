"""The geometry of the synthetic category (`jaxgeal.datasets.synthetic`): its key points and its exact warps.

The canonical object is laid out in a canonical frame (units of about one head radius, x right, y down) with
13 named key points, bilaterally symmetric: mirroring the frame (x -> -x) maps key point i onto key point
`MIRROR_PERMUTATION[i]`. A `Warp` maps that frame onto one rendered image and back, exactly (a smooth
deformation with Lipschitz constant below 1, a similarity, optionally a horizontal mirror); `pose_warp`
builds one from an image's uniform random draws.
"""

from __future__ import annotations

import dataclasses

import numpy as np

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

_HEAD_CENTRE = np.array([0.0, -0.14])  # Canonical point placed near the image centre (mid ear tip to chin).


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

  def to_canonical_f32(self, x, y):
    """`to_canonical` without the mirror, on flat float32 x, y arrays (the dense rendering path)."""
    c, s = np.float32(np.cos(self.angle)), np.float32(np.sin(self.angle))
    dx, dy = x - np.float32(self.centre[0]), y - np.float32(self.centre[1])
    inv = np.float32(1.0 / self.scale)
    qx, qy = (c * dx + s * dy) * inv, (c * dy - s * dx) * inv
    cx, cy = qx.copy(), qy.copy()
    for (fx, fy), ph, (ax_, ay_) in zip(self.freqs, self.phases, self.amps):
      wave = np.sin(np.float32(fx) * qx + np.float32(fy) * qy + np.float32(ph))
      cx += np.float32(ax_) * wave
      cy += np.float32(ay_) * wave
    return cx, cy

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


def pose_warp(
  r, size, deformation, max_rotation, scale_range, max_translation, mirrored, rotation_offset=0.0, clockwise_prob=0.5
) -> Warp:
  """The warp of one image from its uniform draws `r` (angle_u, scale_u, shift_u, freqs, phases, amp_dirs)
  and the category's pose options (see `jaxgeal.datasets.synthetic.RenderOptions`)."""
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
