"""Visualisations: congealing animations run from the input to the congealed image, Middlebury flow colours,
animation files readable by imageio, key points drawn in matching colours."""

import numpy as np
import pytest

from jaxgeal.align import visualize
from jaxgeal.ops import warp
from tests.align.conftest import SIZE, known_matrix


def test_animation_runs_from_input_to_congealed(aligner, images):
  out = aligner.congeal(images)
  frames = list(visualize.congealing_frames(aligner, images, num_frames=5, hold=2, out=out))
  assert len(frames) == 5 + 2 and frames[0].shape == images.shape
  np.testing.assert_allclose(frames[0], images, atol=1e-5)  # t = 0: the input resampled at identity.
  np.testing.assert_allclose(frames[4], out["aligned"], atol=1e-5)  # t = 1: the congealed image.
  np.testing.assert_array_equal(frames[-1], frames[4])  # The hold repeats the last frame.
  # Halfway the sampling grid is halfway between identity and the STN's grid.
  mid = np.asarray(visualize.interpolate_grid(warp.identity_grid(SIZE, 3), out["grid"], 0.5))
  np.testing.assert_allclose(mid, 0.5 * (np.asarray(warp.identity_grid(SIZE, 3)) + out["grid"]), atol=1e-6)


def test_animation_at_another_resolution(aligner, images):
  out = aligner.congeal(images[:1], output_resolution=32)
  frames = list(visualize.congealing_frames(aligner, images[:1], num_frames=2, output_resolution=32, out=out))
  assert frames[0].shape == (1, 32, 32, 3)
  np.testing.assert_allclose(frames[-1], out["aligned"], atol=1e-5)


def test_flipped_images_turn_over_first(aligner, images):
  out = aligner.congeal(images)
  out_f = dict(out, flipped=np.array([True, False, False]), grid=out["grid"] * np.array([-1.0, 1.0], np.float32))
  frames = list(visualize.congealing_frames(aligner, images, num_frames=3, flip_frames=4, out=out_f))
  assert len(frames) == 4 + 3
  np.testing.assert_allclose(frames[0], images, atol=1e-5)
  np.testing.assert_allclose(frames[4][0], images[0, :, ::-1], atol=1e-5)  # Turned over: the mirror image.
  np.testing.assert_allclose(frames[4][1:], images[1:], atol=1e-5)  # Unflipped images waited.


def test_flow_colours_follow_the_middlebury_wheel():
  wheel = visualize.color_wheel()
  assert wheel.shape == (55, 3)
  np.testing.assert_array_equal(
    wheel[[0, 15, 21, 25, 36, 49]],  # The six primaries start the segments.
    [[255, 0, 0], [255, 255, 0], [0, 255, 0], [0, 255, 255], [0, 0, 255], [255, 0, 255]],
  )
  flow = np.array([[[0.0, 0.0], [2.0, 0.0], [2.0, -0.0], [1.0, 0.0], [-2.0, 0.0], [0.0, 2.0], [0.0, -2.0]]])
  c = visualize.flow_to_color(flow).astype(int)[0]
  np.testing.assert_array_equal(c[0], [255, 255, 255])  # No flow: white.
  np.testing.assert_array_equal(c[1], [255, 0, 0])  # +x: red, whatever the sign of the zero y.
  np.testing.assert_array_equal(c[2], [255, 0, 0])
  np.testing.assert_array_equal(c[3], [255, 128, 128])  # Half the largest magnitude: half saturated.
  assert c[4, 2] == 255 and c[4, 0] == 0 and c[4, 1] > 150  # -x: cyan-blue.
  assert c[5, 0] == 255 and c[5, 1] > 200 and c[5, 2] == 0  # +y (down): yellow-orange.
  assert c[6, 2] == 255 and c[6, 1] == 0 and 50 < c[6, 0] < 150  # -y (up): violet.
  assert visualize.flow_to_color(np.zeros((4, 4, 2))).min() == 255


def test_flow_image_is_the_displacement_of_the_known_warp(sim_model_dir, images):
  from jaxgeal.align import Aligner

  a = Aligner.load(sim_model_dir)
  out = a.congeal(images[:1])
  ident = np.asarray(warp.identity_grid(SIZE, 1))[0]
  m = known_matrix()
  expected = (ident @ m[:, :2].T + m[:, 2] - ident) * SIZE / 2.0
  np.testing.assert_allclose(visualize.displacement(out["grid"], SIZE)[0], expected, atol=1e-3)
  img = visualize.flow_image(a, images[:1], out=out)
  assert img.shape == (1, SIZE, SIZE, 3) and img.dtype == np.uint8
  np.testing.assert_array_equal(img[0], visualize.flow_to_color(expected))


@pytest.mark.parametrize("fmt", ["gif", "mp4"])
def test_animation_files_are_readable(aligner, images, tmp_path, fmt):
  import imageio.v2 as imageio

  # (No hold here: Pillow merges identical consecutive GIF frames into one longer frame.)
  path = visualize.animate(aligner, images[:2], tmp_path / f"a.{fmt}", num_frames=4, fps=10)
  assert path == tmp_path / f"a.{fmt}"
  frames = imageio.mimread(str(path)) if fmt == "gif" else [f for f in imageio.get_reader(str(path))]
  assert len(frames) == 4 and frames[0].shape[:2] == (SIZE + 4, 2 * SIZE + 6)  # A padded 1 x 2 grid.


def test_mp4_falls_back_to_gif_without_ffmpeg(monkeypatch, tmp_path):
  import imageio.v2 as imageio

  real = imageio.get_writer

  def no_ffmpeg(uri, *args, **kwargs):
    if str(uri).endswith(".mp4"):
      raise RuntimeError("ffmpeg not found")
    return real(uri, *args, **kwargs)

  monkeypatch.setattr(imageio, "get_writer", no_ffmpeg)
  frames = (np.full((9, 11, 3), 20 * i, np.uint8) for i in range(3))  # Odd sides are fine too.
  with pytest.warns(UserWarning, match="gif instead"):
    path = visualize.write_animation(tmp_path / "x.mp4", frames, fps=5)
  assert path == tmp_path / "x.gif" and len(imageio.mimread(str(path))) == 3
  with pytest.raises(ValueError, match="format"):
    visualize.write_animation(tmp_path / "x.avi", frames)


def test_points_are_drawn_in_matching_colours():
  images = np.zeros((2, 20, 20, 3), np.uint8)
  points = np.array([[[3.0, 4.0], [15.2, 9.8]], [[10.0, 10.0], [np.nan, 2.0]]])
  grid = visualize.correspondence_grid(images, points, radius=1)
  colours = visualize.point_colours(2)
  assert grid.shape == (20, 40, 3)
  np.testing.assert_array_equal(grid[4, 3], colours[0])
  np.testing.assert_array_equal(grid[10, 15], colours[1])
  np.testing.assert_array_equal(grid[10, 20 + 10], colours[0])  # Point 0 of the second image, same colour.
  assert grid[:, 20:].astype(int).sum() == 9 * colours[0].astype(int).sum()  # The NaN point is skipped.
  hidden = visualize.draw_points(images[0], points[0], visible=[False, True], radius=0)
  assert hidden[4, 3].sum() == 0 and (hidden[10, 15] == colours[1]).all()
