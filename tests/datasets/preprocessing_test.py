"""Specification of `jaxgeal.datasets.preprocessing`: upstream's crop/pad modes and their exact point maps."""

from __future__ import annotations

import numpy as np
import pytest

from jaxgeal.datasets import preprocessing as pp
from tests.datasets import fakes


def _argmax_xy(image: np.ndarray) -> tuple[int, int]:
  y, x = np.unravel_index(np.argmax(image[..., 0].astype(np.int64)), image.shape[:2])
  return int(x), int(y)


def test_center_crops_the_centred_square_then_resizes():
  image = np.arange(24 * 40, dtype=np.int64).reshape(24, 40, 1).repeat(3, 2).astype(np.uint8)
  out, affine = pp.preprocess(image, 24, "center")  # Same size: a pure crop, columns 8..31.
  assert out.shape == (24, 24, 3)
  np.testing.assert_array_equal(out, image[:, 8:32])
  assert affine == pp.Affine((1.0, 1.0), (-8.0, 0.0))
  small, _ = pp.preprocess(image, 12, "center")
  assert small.shape == (12, 12, 3)


def test_zero_pad_resizes_the_long_side_and_pads_the_short_one_with_zeros():
  out, affine = pp.preprocess(fakes.solid(32, 64, 200), 16, "zero")
  assert out.shape == (16, 16, 3)
  assert (out[:4] == 0).all() and (out[12:] == 0).all()  # (16 - 8) // 2 rows above, the rest below.
  assert (out[4:12] == 200).all()
  np.testing.assert_allclose(affine.scale, (0.25, 0.25))


def test_border_pad_repeats_the_edge_pixels():
  image = fakes.solid(64, 32, 0)
  image[:, 0] = 50  # Left column
  image[:, -1] = 250  # Right column
  out, _ = pp.preprocess(image, 64, "border")  # Portrait: columns are padded, 16 each side.
  assert out.shape == (64, 64, 3)
  assert (out[:, :17] == 50).all() and (out[:, 48:] == 250).all()
  assert (out[:, 17:47] == 0).all()


def test_odd_padding_puts_the_extra_row_after_and_rounds_half_to_even():
  out, affine = pp.preprocess(fakes.solid(14, 32, 255), 16, "zero")  # Short side 16 * 14 / 32 = 7.
  assert (out[:4] == 0).all() and (out[4:11] == 255).all() and (out[11:] == 0).all()
  out, _ = pp.preprocess(fakes.solid(5, 32, 255), 16, "zero")  # 2.5 -> 2 (numpy rounds half to even).
  assert (out.max(axis=(1, 2)) > 0).sum() == 2


def test_resize_small_side_keeps_the_aspect_ratio_and_none_keeps_the_image():
  assert pp.preprocess(fakes.solid(20, 30, 9), 10, "resize_small_side")[0].shape == (10, 15, 3)
  assert pp.preprocess(fakes.solid(31, 20, 9), 10, "resize_small_side")[0].shape == (15, 10, 3)  # 31*10//20.
  image = fakes.solid(7, 5, 9)
  out, affine = pp.preprocess(image, 256, "none")
  assert out is image and affine == pp.Affine()


def test_unknown_mode_is_rejected():
  with pytest.raises(ValueError, match="pad must be one of"):
    pp.preprocess(fakes.solid(4, 4, 0), 4, "reflect")


# A white block of 1/scale x 1/scale source pixels becomes one output pixel: the key point at the block's
# centre must map exactly onto that pixel, which must be the brightest of the output.
@pytest.mark.parametrize(
  "mode,h,w,size,block,x,y",
  [
    ("center", 40, 60, 20, 2, 34, 12),  # Crop 10 columns off each side, then halve.
    ("zero", 32, 64, 16, 4, 40, 12),  # Landscape: quarter, then pad 4 rows on top.
    ("border", 64, 32, 16, 4, 8, 44),  # Portrait: quarter, then pad 4 columns on the left.
    ("border", 20, 20, 40, 1, 3, 17),  # Upsampling x2: the pixel becomes a 2x2 block.
    ("resize_small_side", 30, 60, 15, 2, 50, 6),  # Halve, keep the aspect.
  ],
)
def test_a_keypoint_on_a_marked_pixel_stays_on_that_pixel(mode, h, w, size, block, x, y):
  out, affine = pp.preprocess(fakes.marked(h, w, x, y, block), size, mode)
  centre = (x + (block - 1) / 2, y + (block - 1) / 2)
  mapped = affine(np.asarray([centre]))[0]
  if block > 1 or mode == "center":
    np.testing.assert_allclose(mapped, np.round(mapped), atol=1e-5)  # Lands on a pixel centre ...
    assert _argmax_xy(out) == tuple(int(v) for v in np.round(mapped))  # ... the marked one.
  else:  # Upsampling: the point is the centre of the 2x2 block the pixel became.
    bright = np.argwhere(out[..., 0] > 128)
    np.testing.assert_allclose(mapped[::-1], bright.mean(0), atol=1e-5)


def test_boxes_map_like_their_corners_and_inverse_undoes_the_map():
  affine = pp.Affine((0.5, 0.25), (3.0, -1.0))
  np.testing.assert_allclose(affine.boxes([2, 4, 10, 8]), [4, 0, 8, 1])
  points = np.asarray([[1.5, -2.0], [10.0, 7.25]])
  np.testing.assert_allclose(affine.inverse()(affine(points)), points, atol=1e-5)
  other = pp.Affine((2.0, 2.0), (0.5, 0.5))
  np.testing.assert_allclose(affine.then(other)(points), other(affine(points)), atol=1e-5)
  assert pp.Affine.from_array(affine.to_array()) == affine


def test_crop_outside_the_image_repeats_edges_or_fills_zeros():
  image = np.arange(12, dtype=np.uint8).reshape(3, 4, 1).repeat(3, 2)
  edge, affine = pp.crop(image, -2, -1, 8, 5, fill="edge")
  assert edge.shape == (5, 8, 3)
  np.testing.assert_array_equal(edge[..., 0], np.pad(image[..., 0], ((1, 1), (2, 2)), mode="edge"))
  assert affine == pp.Affine((1.0, 1.0), (2.0, 1.0))
  zero, _ = pp.crop(image, -2, -1, 8, 5, fill="zero")
  np.testing.assert_array_equal(zero[..., 0], np.pad(image[..., 0], ((1, 1), (2, 2))))
  far, _ = pp.crop(image, 10, 10, 2, 2, fill="edge")  # Entirely outside: the nearest corner pixel.
  assert (far[..., 0] == 11).all()


def test_acsm_square_box_pads_five_percent_and_squares_with_half_up_rounding():
  # Tight box 40 x 20 pixels: +2 / +1 pixels per side -> 44 x 22, grown by 11 rows above and below.
  assert pp.acsm_square_box([10, 20, 49, 39]) == (8, 8, 44)
  # 11 x 8 pixels, padded 0.55 / 0.4 per side: x 4.45 -> 4, 15.55 -> 16; y 4.6 -> 5, 12.4 -> 12, so 13 x 8;
  # squaring grows y by (13 - 8) / 2 = 2.5 -> 3 rows above (half up; round-half-even would give 2).
  assert pp.acsm_square_box([5, 5, 15, 12]) == (4, 2, 13)


def test_acsm_box_crop_maps_box_corners_into_the_square_output():
  image = fakes.marked(50, 80, 30, 30, 1)
  out, affine = pp.acsm_box_crop(image, [10, 20, 49, 39], 22)
  assert out.shape == (22, 22, 3)
  # Window (8, 8) .. (51, 51), 44 -> 22 pixels: x -> (x - 8 + 0.5) / 2 - 0.5.
  np.testing.assert_allclose(affine(np.asarray([[8.5, 8.5], [50.5, 50.5]])), [[0, 0], [21, 21]], atol=1e-6)
