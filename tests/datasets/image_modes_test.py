"""Every image file becomes the right 8-bit RGB, for the CLIs (`images.load_image`) and the dataset builders
(`base.read_image`) alike: 16-bit PNGs are scaled (not saturated), alpha is dropped, palettes with transparency,
grayscale and CMYK are converted, and truncated files are errors naming the file."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from jaxgeal import images
from jaxgeal.datasets import base

SIXTEEN = [0, 257, 32768, 65535]  # -> 0, 1, 128, 255 (the high byte).
EIGHT = [0, 1, 128, 255]


def png16(arr) -> bytes:
  """uint16 (H, W, C), C in 1..4 -> a 16-bit PNG (gray, gray + alpha, RGB, RGBA), written by hand: PIL cannot."""
  arr = np.asarray(arr, np.uint16)
  arr = arr[..., None] if arr.ndim == 2 else arr
  h, w, c = arr.shape
  raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in arr)

  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

  header = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def read_both(path):
  """(load_image as uint8, read_image): the two readers must agree."""
  a = np.round((images.load_image(path) + 1.0) * 127.5).astype(np.uint8)
  b = base.read_image(path)
  np.testing.assert_array_equal(a, b)
  return b


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16_bit_pngs_are_scaled_to_8_bits(tmp_path, channels):
  a = np.zeros((1, 4, channels), np.uint16)
  a[0, :, :channels] = np.array(SIXTEEN)[:, None]
  if channels in (2, 4):
    a[..., -1] = 65535  # Opaque.
  path = tmp_path / "x.png"
  path.write_bytes(png16(a))
  out = read_both(path)
  assert out.shape == (1, 4, 3)
  np.testing.assert_array_equal(out[0], np.repeat(np.array(EIGHT)[:, None], 3, 1))


def test_16_bit_grayscale_is_not_saturated(tmp_path):
  path = tmp_path / "g.png"
  Image.fromarray(np.array([[1000, 30000, 65535]], np.uint16)).save(path)  # PIL writes "I;16".
  np.testing.assert_array_equal(read_both(path)[0, :, 0], [3, 117, 255])


def test_32_bit_integer_images_are_read_as_16_bit(tmp_path):
  path = tmp_path / "i.tiff"
  Image.fromarray(np.array([[0, 32768, 70000]], np.int32), "I").save(path)
  np.testing.assert_array_equal(read_both(path)[0, :, 1], [0, 128, 255])


def test_alpha_is_dropped_and_palette_transparency_keeps_the_palette_colour(tmp_path):
  rgba = np.zeros((2, 2, 4), np.uint8)
  rgba[..., 0] = 200
  rgba[0, 0, 3] = 0
  Image.fromarray(rgba).save(tmp_path / "rgba.png")
  np.testing.assert_array_equal(read_both(tmp_path / "rgba.png")[..., 0], 200)
  pal = Image.new("P", (2, 1))
  pal.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
  pal.putpixel((1, 0), 1)
  pal.info["transparency"] = 0
  pal.save(tmp_path / "p.png", transparency=0)
  with Image.open(tmp_path / "p.png") as im:
    assert im.mode == "P" and "transparency" in im.info
  np.testing.assert_array_equal(read_both(tmp_path / "p.png")[0], [[10, 20, 30], [40, 50, 60]])


@pytest.mark.parametrize(
  "mode,value,expected",
  [
    ("L", 77, (77, 77, 77)),
    ("LA", (77, 0), (77, 77, 77)),
    ("1", 1, (255, 255, 255)),
    ("CMYK", (0, 255, 0, 0), (255, 0, 255)),
  ],
)
def test_grayscale_and_cmyk(tmp_path, mode, value, expected):
  path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
  Image.new(mode, (3, 2), value).save(path, **({"quality": 100} if mode == "CMYK" else {}))
  out = read_both(path)
  assert out.shape == (2, 3, 3)
  np.testing.assert_allclose(out[0, 0], expected, atol=2 if mode == "CMYK" else 0)


def test_truncated_files_are_errors_naming_the_file(tmp_path):
  buf = io.BytesIO()
  Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 64, 3), np.uint8)).save(buf, "PNG")
  path = tmp_path / "cut.png"
  path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
  with pytest.raises(ValueError, match="cut.png"):
    images.load_image(path)
  with pytest.raises(OSError):
    base.read_image(path)
