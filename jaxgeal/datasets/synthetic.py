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

The category is a `RenderOptions`; the key point layout and the warps live in `synthetic_geometry` (re-exported
here), the shading of the creature and its background in `synthetic_shading`.
"""

from __future__ import annotations

import colorsys
import dataclasses
import json
import os
import pathlib
from collections.abc import Callable

import numpy as np

from jaxgeal import images as image_io
from jaxgeal.datasets import synthetic_shading as shading
from jaxgeal.datasets.synthetic_geometry import (
  CANONICAL_KEYPOINTS,
  KEYPOINT_NAMES,
  MIRROR_PERMUTATION,
  Warp,
  mirror_keypoints,
  pose_warp,
  transfer_points,
)
from jaxgeal.evaluation import pck

__all__ = [
  "CANONICAL_KEYPOINTS",
  "CATEGORY",
  "KEYPOINT_NAMES",
  "MIRROR_PERMUTATION",
  "RenderOptions",
  "Warp",
  "generator_spec",
  "make_dataset",
  "mirror_keypoints",
  "render",
  "transfer_points",
  "write_folder",
]

CATEGORY = "synthetic_heads"

_NUM_WAVES = 4  # Sinusoids of the deformation.
_MAX_CLUTTER = 6  # Background shapes.
_MAX_SPOTS = 8


@dataclasses.dataclass(frozen=True)
class RenderOptions:
  """What the category is: the distribution every image of a data set is drawn from (a demo config's
  `data.render`, as `RenderOptions(**config.data.render)`). What one call draws - a forced mirror, the
  anti-aliasing, a shader instead of the creature - are arguments of `render` instead.

  Attributes:
    mirror_prob: probability of a horizontally mirrored render.
    deformation: Lipschitz bound of the non-rigid displacement field, in [0, 1); 0 = pure similarity.
    max_rotation: degrees; rotation is uniform in [-max_rotation, max_rotation].
    scale_range: pixels per canonical unit as fractions of the image size (the head is ~1.5 units tall).
    max_translation: maximum shift of the head centre from the image centre, fraction of the image size.
    asymmetric: draw the left-side markings (eye patch, bow); without them the creature is mirror symmetric.
    occluder_prob: probability of a bar in front of the object; key points under it are invisible.
    max_clutter: at most this many background shapes (0..6; the drawn count is clipped, so other choices
      stay the same).
    background_noise: add the value noise to the background's two-colour gradient. Without it the
      background is three global numbers (direction, two colours) and no layout of its own, which a
      spatial structure code would otherwise have to keep (the Swapping Autoencoder demo).
    fur_texture: draw the fur's stripes, spots or value noise (each on a quarter of the heads; the rest are
      plain). Without it every head's fur is plain: colours, markings and lighting stay. The texture's
      layout on the head (stripe phase, spot positions) is drawn with the appearance, which a global texture
      code is not built to carry (the Swapping Autoencoder demo).
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
      mirror, framing) from its own seed and index: one individual in many poses (held-out seeds show the
      same one).
  """

  mirror_prob: float = 0.5
  deformation: float = 0.3
  max_rotation: float = 20.0
  scale_range: tuple[float, float] = (0.30, 0.42)
  max_translation: float = 0.08
  asymmetric: bool = True
  occluder_prob: float = 0.0
  max_clutter: int = _MAX_CLUTTER
  background_noise: bool = True
  fur_texture: bool = True
  closeup_prob: float = 0.0
  closeup_scale: tuple[float, float] = (0.60, 0.80)
  rotation_offset: float = 0.0
  clockwise_prob: float = 0.5
  appearance_of: tuple[int, int] | None = None

  def __post_init__(self):
    if not 0.0 <= self.deformation < 1.0:
      raise ValueError(f"deformation must be in [0, 1) for the warp to be invertible, got {self.deformation}")
    if not 0 <= self.max_clutter <= _MAX_CLUTTER:
      raise ValueError(f"max_clutter must be in [0, {_MAX_CLUTTER}], got {self.max_clutter}")
    for name in ("background_noise", "fur_texture"):
      if not isinstance(getattr(self, name), bool):
        raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
    if not 0.0 < self.clockwise_prob < 1.0:
      raise ValueError(f"clockwise_prob must be in (0, 1), got {self.clockwise_prob}")
    # Sequences from configs or JSON (lists) become tuples: the options stay immutable and hashable.
    for name in ("scale_range", "closeup_scale", "appearance_of"):
      value = getattr(self, name)
      if value is not None:
        object.__setattr__(self, name, tuple(value))

  def to_json(self) -> dict:
    """Every option as plain JSON values (`RenderOptions(**options.to_json())` is the same options)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


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


def render(
  seed: int,
  index: int,
  size: int = 64,
  options: RenderOptions = RenderOptions(),
  *,
  mirror: bool | None = None,
  supersample: int = 2,
  shader: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict:
  """Render image `index` of the category `options` drawn with `seed`.

  `options` says what the category is (shared by every image of a data set); the keyword arguments say how
  this one call draws its image.

  Args:
    seed, index: determine every random choice (independently per index).
    size: output is size x size.
    options: the category (`RenderOptions`).
    mirror: force (True/False) the horizontal mirror; None draws it with probability `options.mirror_prob`.
    supersample: samples per pixel along each axis (anti-aliasing).
    shader: if given, render `shader(canonical_points (N, 2) float32) -> (N, C)` through the same warp
      instead of the creature and background (markers, label maps, checkerboards); points are in this
      image's canonical frame (the one `warp.to_canonical` returns, mirror included).

  Returns:
    dict(image (size, size, 3) float32 in [-1, 1] (or (size, size, C) shader values), keypoints (P, 2) float32
    (x, y) pixels, visibility (P,) bool (inside the image and not occluded), bbox (4,) float32 x0, y0, x1, y1 of
    the object silhouette, mask (size, size) float32 silhouette coverage (amodal), mirrored bool, warp `Warp`).
  """
  o = options
  r = _draw(np.random.default_rng([seed, index]))
  if o.appearance_of is not None:
    look = _draw(np.random.default_rng([int(i) for i in o.appearance_of]))
    r = {k: (r[k] if k in _POSE_DRAWS else look[k]) for k in r}
  r["num_clutter"] = min(r["num_clutter"], o.max_clutter)
  if not o.background_noise:
    r["bg_noise_amp"] = 0.0  # After the draws, so every other choice stays the same.
  if not o.fur_texture:
    r["texture_kind"] = 0  # plain fur
  mirrored = (r["mirror_u"] < o.mirror_prob) if mirror is None else bool(mirror)
  scale_range = o.closeup_scale if r["closeup_u"] < o.closeup_prob else o.scale_range
  warp = pose_warp(
    r,
    size,
    o.deformation,
    o.max_rotation,
    scale_range,
    o.max_translation,
    mirrored,
    o.rotation_offset,
    o.clockwise_prob,
  )
  # Everything is drawn unmirrored; a mirrored render is the flip of it (see the module docstring).
  plain = dataclasses.replace(warp, mirrored=False)
  x, y = shading.sample_grid(size, supersample)
  cx, cy = plain.to_canonical_f32(x, y)
  obj_col, silhouette = shading.shade_head(cx, cy, r, o.asymmetric)
  keypoints = plain.to_image(CANONICAL_KEYPOINTS)
  occluded = np.zeros(len(keypoints), bool)
  if shader is not None:
    canon = np.stack([-cx if mirrored else cx, cy], -1)
    image = shading.box_filter(np.asarray(shader(canon), np.float32).reshape(len(x), -1), size, supersample)
  else:
    u, v = x / np.float32(size), y / np.float32(size)
    col = shading.background(r, size, supersample, u, v)
    obj = np.flatnonzero(silhouette)
    light = 1 + np.float32(r["light"][0]) * (u[obj] - 0.5) + np.float32(r["light"][1]) * (v[obj] - 0.5)
    col[obj] = obj_col[obj] * light[:, None]
    if r["occluder_u"] < o.occluder_prob:
      col = np.where(shading.shape_mask(u, v, r["occluder"])[:, None], r["occluder"][-1], col)
      occluded = shading.shape_mask(keypoints[:, 0] / size, keypoints[:, 1] / size, r["occluder"])
    image = shading.box_filter(np.clip(col, 0, 1), size, supersample) * 2 - 1
  mask = shading.box_filter(silhouette.astype(np.float32)[:, None], size, supersample)[..., 0]
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


def make_dataset(
  n: int, size: int = 64, seed: int = 0, options: RenderOptions = RenderOptions(), *, num_pairs: int | None = None
) -> dict:
  """Render images 0..n-1 of `seed` of the category `options` in the key point structure of `jaxgeal.datasets`
  (as SPair / CUB).

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
  items = [render(seed, i, size, options) for i in range(n)]
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


def generator_spec(
  n: int, size: int = 64, seed: int = 0, options: RenderOptions = RenderOptions(), *, num_pairs: int | None = None
) -> dict:
  """What `write_folder` records as its annotations' "generator" (plain JSON values): enough to render the
  same folder again, and to tell whether a folder on disk is the one these arguments would write."""
  extra = {} if num_pairs is None else dict(num_pairs=int(num_pairs))
  return dict(module=__name__, n=int(n), size=int(size), seed=int(seed), options=dict(extra, **options.to_json()))


def write_folder(
  out_dir: str | os.PathLike,
  n: int,
  size: int = 64,
  seed: int = 0,
  options: RenderOptions = RenderOptions(),
  *,
  num_pairs: int | None = None,
) -> pathlib.Path:
  """Write `make_dataset(n, size, seed, options, num_pairs=num_pairs)` as a plain image folder:
  `out_dir/000000.png, ...` plus `out_dir/annotations.json` (the PCK annotation format of
  `jaxgeal.evaluation.pck`, each image also carrying its exact `warp`, and the `generator_spec`).
  Returns the path of the annotations file."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  ds = make_dataset(n, size, seed, options, num_pairs=num_pairs)
  files = [f"{i:06d}.png" for i in range(n)]
  for name, image in zip(files, ds["images"]):
    image_io.save_image(out_dir / name, image)
  doc = pck.annotations_to_json(ds, files)
  doc.update(category=CATEGORY, generator=generator_spec(n, size, seed, options, num_pairs=num_pairs))
  for entry, warp in zip(doc["images"], ds["warps"]):
    entry["warp"] = warp.to_json()
  path = out_dir / "annotations.json"
  path.write_text(json.dumps(doc, indent=1))
  return path
