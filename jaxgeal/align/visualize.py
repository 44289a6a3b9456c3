"""Visualising congealing: animations, flow images, correspondence grids (GANgealing §4, Figs. 1, 5-7, app. G).

Upstream draws these with applications/vis_correspondence.py (images gradually congealing), utils/vis_tools/
flow_vis.py (flow colour coding) and helpers (key points on images). Here:

  * `congealing_frames` / `animate`: the input morphing into its congealed image. Frame t samples the input
    with grid_t = (1 - t)·identity + t·grid, the linear interpolation of the identity sampling grid and the
    STN's, so t = 0 is the input (resampled at identity) and t = 1 exactly the congealed image (same
    anti-aliased sampler). Flipped images (appendix B.4) first turn over, identity -> mirrored identity, like
    upstream's flip stage, so the warp never passes through a squashed image.
  * `flow_to_color`: the Middlebury colour coding (Baker et al., "A Database and Evaluation Methodology for
    Optical Flow", IJCV 2011): hue = flow direction on a 55-colour wheel (red, yellow, green, cyan, blue,
    magenta), saturation = magnitude / max magnitude. Zero flow is white; flow along +x (right) is red
    (255, 0, 0), +y (down) orange-yellow, -x cyan-blue, -y violet. `flow_image` shows an image's displacement
    field grid - identity (where each congealed pixel samples from, relative to where it sits) in pixels.
  * `draw_points` / `correspondence_grid`: images with coloured matched key points, a row per image set.

Frames are produced one at a time (jitted, static shapes) and streamed into the writer.
"""

from __future__ import annotations

import functools
import pathlib
import warnings
from collections.abc import Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from jaxgeal import images as images_lib
from jaxgeal.models import stn as stn_lib
from jaxgeal.ops import mipmap, warp

ANIMATION_FORMATS = ("mp4", "gif")

# -- congealing animations -----------------------------------------------------------------------------------


def interpolate_grid(start, end, t) -> jax.Array:
  """(1 - t)·start + t·end: the sampling grid a fraction t of the way along the warp."""
  return (1.0 - t) * jnp.asarray(start) + t * jnp.asarray(end)


@functools.cache
def _sampler(antialias: bool, padding_mode: str):
  """One jitted sampler per setting (t is traced), shared by every animation."""

  def sample(source, start, end, t):
    grid = interpolate_grid(start, end, t)
    if antialias:  # The STN's own sampler, so that t = 1 reproduces the congealed image exactly.
      return mipmap.mipmap_warp(source, grid, padding_mode, max_num_levels=stn_lib.MAX_NUM_LEVELS)
    return warp.grid_sample(source, grid, padding_mode)

  return jax.jit(sample)


def congealing_frames(
  aligner,
  images,
  num_frames: int = 48,
  flip_frames: int = 16,
  hold: int = 0,
  output_resolution: int | None = None,
  out: dict | None = None,
  **kwargs,
) -> Iterator[np.ndarray]:
  """Yields (N, R, R, 3) frames in [-1, 1] of the images morphing into their congealed versions.

  Args:
    aligner: an `Aligner`.
    images: (N, S, S, 3) images in [-1, 1] at the model's size.
    num_frames: frames of the warp, both ends included (t = 0, 1/(n-1), ..., 1).
    flip_frames: frames of the flip stage before the warp, for images the flip inference mirrored (0: none;
      the warp then starts from the mirrored identity).
    hold: extra copies of the last frame (a pause before an animation loops).
    output_resolution: side R of the frames (default S), as `Aligner.congeal`.
    out: a precomputed `aligner.congeal(images, output_resolution=R)`.
  """
  if num_frames < 2:
    raise ValueError(f"num_frames must be >= 2, got {num_frames}")
  images = aligner._check_images(images)
  res = output_resolution or aligner.size
  out = out if out is not None else aligner.congeal(images, output_resolution=res, **kwargs)
  n = len(images)
  ident = warp.identity_grid(res, n)
  flipped = jnp.asarray(out["flipped"], bool)[:, None, None, None]
  # The warp starts from the identity of the image the STN actually saw: mirrored where flipped.
  start = jnp.where(flipped, ident * jnp.array([-1.0, 1.0]), ident)
  grid = jnp.asarray(out["grid"])
  sample = _sampler(bool(getattr(aligner.stn, "antialias", True)), aligner.padding_mode)
  source = jnp.asarray(images)
  stages = []
  if flip_frames > 0 and bool(np.any(out["flipped"])):  # Unflipped images hold still meanwhile.
    stages.append((ident, start, np.arange(flip_frames) / flip_frames))
  stages.append((start, grid, np.linspace(0.0, 1.0, num_frames)))
  frame = None
  for a, b, ts in stages:
    for t in ts:
      frame = np.asarray(sample(source, a, b, jnp.float32(t)))
      yield frame
  for _ in range(hold):
    yield frame


def _even(frame: np.ndarray) -> np.ndarray:
  """H.264 with yuv420p needs even sides: pad one edge row / column where odd."""
  h, w = frame.shape[:2]
  return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if (h % 2 or w % 2) else frame


def write_animation(path, frames: Iterable[np.ndarray], fps: float = 24) -> pathlib.Path:
  """Streams (H, W, 3) frames (uint8 or [-1, 1] floats) into an .mp4 or .gif; returns the path written.

  An .mp4 needs ffmpeg (imageio-ffmpeg); where it is unavailable the animation is written as .gif beside it
  (with a warning). GIF frames are quantised to 256 colours and, by Pillow, kept until the file is closed.
  """
  import imageio.v2 as imageio

  path = pathlib.Path(path)
  fmt = path.suffix.lower().lstrip(".")
  if fmt not in ANIMATION_FORMATS:
    raise ValueError(f"animation format must be one of {ANIMATION_FORMATS}, got {path.name!r}")
  path.parent.mkdir(parents=True, exist_ok=True)
  frames = iter(frames)
  first = next(frames, None)
  if first is None:
    raise ValueError("write_animation: no frames")
  to_u8 = lambda f: np.asarray(f) if np.asarray(f).dtype == np.uint8 else images_lib.to_uint8(f)
  writer = None
  if fmt == "mp4":
    try:
      writer = imageio.get_writer(str(path), fps=fps, macro_block_size=2, ffmpeg_log_level="error")  # No banner.
      writer.append_data(_even(to_u8(first)))
    except Exception as e:  # No ffmpeg backend (imageio raises several types).
      warnings.warn(f"cannot write mp4 ({e}); writing a gif instead", stacklevel=2)
      if writer is not None:
        try:
          writer.close()
        except Exception:
          pass
      writer, path, fmt = None, path.with_suffix(".gif"), "gif"
  if writer is None:
    writer = imageio.get_writer(str(path), mode="I", duration=1000.0 / fps, loop=0)
    writer.append_data(to_u8(first))
  prepare = _even if fmt == "mp4" else (lambda f: f)
  try:
    for frame in frames:
      writer.append_data(prepare(to_u8(frame)))
  finally:
    writer.close()
  return path


def animate(aligner, images, path, fps: float = 24, nrow: int | None = None, **kwargs) -> pathlib.Path:
  """Writes one congealing animation of the images (a grid of them when N > 1); returns the path written.

  kwargs go to `congealing_frames` (num_frames, flip_frames, hold, output_resolution, out, cluster).
  """

  def grids():
    for frame in congealing_frames(aligner, images, **kwargs):
      yield frame[0] if len(frame) == 1 else images_lib.make_grid(frame, nrow=nrow)

  return write_animation(path, grids(), fps)


# -- flow images ---------------------------------------------------------------------------------------------


def color_wheel() -> np.ndarray:
  """(55, 3) Middlebury colour wheel: red -> yellow -> green -> cyan -> blue -> magenta -> red (uint8 values)."""
  # Segment lengths chosen by Baker et al. so that perceptually similar hues get similar arc lengths.
  segments = (
    (15, (255, 0, 0), (255, 255, 0)),
    (6, (255, 255, 0), (0, 255, 0)),
    (4, (0, 255, 0), (0, 255, 255)),
    (11, (0, 255, 255), (0, 0, 255)),
    (13, (0, 0, 255), (255, 0, 255)),
    (6, (255, 0, 255), (255, 0, 0)),
  )
  rows = []
  for n, a, b in segments:
    a, b = np.asarray(a), np.asarray(b)
    rows.append(a + np.sign(b - a) * np.floor(255.0 * np.arange(n)[:, None] / n))
  return np.concatenate(rows).astype(np.float64)


def flow_to_color(flow, max_radius: float | None = None) -> np.ndarray:
  """(H, W, 2) flow (x, y) -> (H, W, 3) uint8 Middlebury colours (see the module docstring).

  The magnitude is normalised by max_radius (default: the largest in the field); magnitudes beyond it are
  darkened (x0.75), as in the reference code. The wheel is closed here (angle -pi and +pi both map to red),
  where the reference maps them to the first and last of its 55 colours.
  """
  flow = np.asarray(flow, np.float64)
  u, v = flow[..., 0], flow[..., 1]
  rad = np.sqrt(u * u + v * v)
  max_radius = float(rad.max()) if max_radius is None else float(max_radius)
  rad = rad / max(max_radius, 1e-12)
  wheel = color_wheel() / 255.0
  ncols = len(wheel)
  angle = np.arctan2(-v, -u) / np.pi  # In [-1, 1]; -1 (and +1) is +x.
  fk = ((angle + 1.0) / 2.0 * ncols) % ncols
  k0 = np.floor(fk).astype(np.int64) % ncols
  k1 = (k0 + 1) % ncols
  f = (fk - np.floor(fk))[..., None]
  col = (1.0 - f) * wheel[k0] + f * wheel[k1]
  r = rad[..., None]
  col = np.where(r <= 1.0, 1.0 - r * (1.0 - col), col * 0.75)  # Desaturate towards white at small magnitude.
  return np.round(np.clip(col, 0.0, 1.0) * 255.0).astype(np.uint8)


def displacement(grid, source_size: int) -> np.ndarray:
  """(..., H, W, 2) sampling grid -> displacement grid - identity in pixels of the (square) source image."""
  grid = np.asarray(grid, np.float32)
  ident = np.asarray(warp.identity_grid(grid.shape[-3:-1], 1))[0]
  return (grid - ident) * (source_size / 2.0)


def flow_image(aligner, images, out: dict | None = None, max_radius: float | None = None, **kwargs) -> np.ndarray:
  """(N, R, R, 3) uint8 colour-coded displacement fields of the images' congealing warps."""
  out = out if out is not None else aligner.congeal(images, **kwargs)
  disp = displacement(out["grid"], aligner.size)
  return np.stack([flow_to_color(d, max_radius) for d in disp])


# -- key points ----------------------------------------------------------------------------------------------


def point_colours(n: int) -> np.ndarray:
  """(n, 3) uint8 distinct colours around the hue circle."""
  hues = np.linspace(0, 1, n, endpoint=False)
  return (np.stack([np.abs(np.sin(np.pi * (hues + k / 3))) for k in range(3)], -1) * 255).astype(np.uint8)


def draw_points(image, points, colours=None, radius: int = 2, visible=None) -> np.ndarray:
  """Draws (P, 2) (x, y) pixel points as filled squares of side 2·radius + 1 on a copy of an (H, W, 3) image.

  image: uint8 or [-1, 1] floats (returned as uint8). Points that are not visible or not finite are skipped.
  """
  img = np.array(image) if np.asarray(image).dtype == np.uint8 else images_lib.to_uint8(image)
  points = np.asarray(points, np.float64).reshape(-1, 2)
  colours = point_colours(len(points)) if colours is None else np.asarray(colours, np.uint8)
  visible = np.ones(len(points), bool) if visible is None else np.asarray(visible, bool)
  h, w = img.shape[:2]
  for (x, y), c, v in zip(points, colours, visible):
    if not v or not (np.isfinite(x) and np.isfinite(y)):
      continue
    xi, yi = int(round(x)), int(round(y))
    img[max(0, yi - radius) : min(h, yi + radius + 1), max(0, xi - radius) : min(w, xi + radius + 1)] = c
  return img


def correspondence_grid(
  images, points, colours=None, visible=None, radius: int = 2, nrow: int | None = None, padding: int = 0
) -> np.ndarray:
  """(N, H, W, 3) images and their (N, P, 2) matched points -> one uint8 grid, point i in colour i everywhere.

  nrow images a row (default: all in one row); visible is (P,) or (N, P).
  """
  points = np.asarray(points)
  n = len(points)
  colours = point_colours(points.shape[1]) if colours is None else colours
  vis = [None] * n if visible is None else np.broadcast_to(np.asarray(visible, bool), points.shape[:2])
  drawn = np.stack([draw_points(im, p, colours, radius, v) for im, p, v in zip(images, points, vis)])
  return images_lib.make_grid(drawn, nrow=nrow or n, padding=padding)
