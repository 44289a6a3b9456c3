"""`python -m jaxgeal.swap`: every subcommand on the converted upstream fixture model (64 px) and a few small
images; outputs are the library's operations laid out as documented; user mistakes are one line and exit 2."""

import numpy as np
import pytest
from PIL import Image

from jaxgeal import checkpoint, images
from jaxgeal.swap import SwappingAutoencoder
from jaxgeal.swap import __main__ as swap_cli

TOL = 1  # uint8 levels: the CLI decodes in other batches than the reference below.


@pytest.fixture(scope="module")
def model(model_dir):
  return SwappingAutoencoder.load(model_dir)


def _write(path, seed, size=(48, 40), mode="RGB"):
  """A smooth random image (so bicubic resizing stays tame), saved in `mode`."""
  rng = np.random.RandomState(seed)
  small = rng.randint(0, 256, (4, 4, 3)).astype(np.uint8)
  im = Image.fromarray(small).resize(size, Image.BILINEAR)
  if mode == "L":
    im = im.convert("L")
  elif mode == "I;16":
    im = Image.fromarray(np.asarray(im.convert("L"), np.uint16) * 257)
  path.parent.mkdir(parents=True, exist_ok=True)
  im.save(path)
  return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  d = tmp_path_factory.mktemp("swap_inputs")
  return {
    "structure": [_write(d / "structure" / f"{n}.png", i) for i, n in enumerate(("s0", "s1"))],
    "texture": [_write(d / "texture" / f"{n}.png", 10 + i, (64, 64)) for i, n in enumerate(("t0", "t1", "t2"))],
  }


def _run(capsys, *argv):
  rc = swap_cli.main([str(a) for a in argv])
  out = capsys.readouterr()
  return rc, out.out, out.err


def _ok(capsys, *argv):
  rc, out, err = _run(capsys, *argv)
  assert rc == 0, err
  return out


def _error(capsys, *argv) -> str:
  rc, out, err = _run(capsys, *argv)
  assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, (rc, err)
  return err


def _read(path) -> np.ndarray:
  return np.asarray(Image.open(path).convert("RGB")).astype(np.int32)


def _expected_swap(model, structure, texture) -> np.ndarray:
  a, b = images.load_image(structure, 64)[None], images.load_image(texture, 64)[None]
  return images.to_uint8(model.swap(a, b))[0].astype(np.int32)


def _assert_near(actual, expected, what):
  err = int(np.max(np.abs(actual - expected)))
  assert err <= TOL, f"{what}: {err} levels"


def test_grid_rows_are_structures_columns_are_textures(model, model_dir, files, tmp_path, capsys):
  out = tmp_path / "grid.png"
  structures, texture_dir = files["structure"], files["texture"][0].parent
  _ok(capsys, "grid", "--model", model_dir, "--structure", *structures, "--texture", texture_dir, "--out", out)
  grid = _read(out)
  textures = sorted(texture_dir.iterdir())
  assert grid.shape == ((len(structures) + 1) * 64, (len(textures) + 1) * 64, 3)
  assert (grid[:64, :64] == 255).all()
  for j, t in enumerate(textures):
    np.testing.assert_array_equal(grid[:64, (j + 1) * 64 : (j + 2) * 64], images.to_uint8(images.load_image(t, 64)))
  for i, s in enumerate(structures):
    np.testing.assert_array_equal(grid[(i + 1) * 64 : (i + 2) * 64, :64], images.to_uint8(images.load_image(s, 64)))
    for j, t in enumerate(textures):
      cell = grid[(i + 1) * 64 : (i + 2) * 64, (j + 1) * 64 : (j + 2) * 64]
      _assert_near(cell, _expected_swap(model, s, t), f"cell ({i}, {j})")


def test_swap_pairs_folders_in_sorted_order_files_with_folders_or_by_a_pairs_file(
  model, model_dir, files, tmp_path, capsys
):
  (s0, s1), (t0, t1, t2) = files["structure"], files["texture"]
  base = ["swap", "--model", model_dir, "--batch_size", 2]
  _ok(capsys, *base, "--structure", s0, "--texture", t0.parent, "--out", tmp_path / "one_to_all")
  assert sorted(p.name for p in (tmp_path / "one_to_all").iterdir()) == ["s0__t0.png", "s0__t1.png", "s0__t2.png"]
  _assert_near(_read(tmp_path / "one_to_all" / "s0__t2.png"), _expected_swap(model, s0, t2), "s0__t2")
  pairs = tmp_path / "pairs.txt"
  pairs.write_text("# structure texture\ns1.png t2.png\n\ns0.png\tt1.png\n")
  folders = ["--structure", s0.parent, "--texture", t0.parent]
  _ok(capsys, *base, *folders, "--pairs", pairs, "--out", tmp_path / "paired")
  assert sorted(p.name for p in (tmp_path / "paired").iterdir()) == ["s0__t1.png", "s1__t2.png"]
  _assert_near(_read(tmp_path / "paired" / "s1__t2.png"), _expected_swap(model, s1, t2), "s1__t2")
  # Folders of equal counts pair in sorted order; unequal counts need --pairs.
  two = tmp_path / "two"
  for t in (t0, t1):
    _write(two / t.name, 10 + int(t.stem[1]), (64, 64))
  _ok(capsys, *base, *folders[:2], "--texture", two, "--out", tmp_path / "sorted")
  assert sorted(p.name for p in (tmp_path / "sorted").iterdir()) == ["s0__t0.png", "s1__t1.png"]
  err = _error(capsys, *base, *folders, "--out", tmp_path / "unequal")
  assert "2 structure images" in err and "3 texture images" in err and "--pairs" in err


def test_interpolate_goes_from_texture_a_to_texture_b_as_a_strip_or_a_gif(model, model_dir, files, tmp_path, capsys):
  s, (ta, tb, _) = files["structure"][0], files["texture"]
  args = ["interpolate", "--model", model_dir, "--structure", s, "--texture_a", ta, "--texture_b", tb, "--steps", 4]
  _ok(capsys, *args, "--out", tmp_path / "strip.png")
  strip = _read(tmp_path / "strip.png")
  assert strip.shape == (64, 4 * 64, 3)
  _assert_near(strip[:, :64], _expected_swap(model, s, ta), "step 0")
  _assert_near(strip[:, -64:], _expected_swap(model, s, tb), "last step")
  out = _ok(capsys, *args, "--gif", "--out", tmp_path / "anim.gif")
  assert "4 frames" in out
  with Image.open(tmp_path / "anim.gif") as gif:
    assert gif.n_frames == 4 and gif.size == (64, 64)
  # Without --texture_a the strip starts at the structure image's own texture (its reconstruction).
  _ok(capsys, *args[:5], "--texture_b", tb, "--steps", 2, "--out", tmp_path / "from_rec.png")
  _assert_near(_read(tmp_path / "from_rec.png")[:, :64], _expected_swap(model, s, s), "reconstruction")
  assert "name --out with .gif" in _error(capsys, *args, "--gif", "--out", tmp_path / "anim.png")


def test_region_swaps_the_texture_inside_the_mask_only(model, model_dir, files, tmp_path, capsys):
  s, t = files["structure"][0], files["texture"][1]
  mask = np.zeros((16, 16), np.uint8)
  mask[:, :8] = 255
  Image.fromarray(mask).save(tmp_path / "mask.png")
  out = tmp_path / "region.png"
  _ok(
    capsys,
    "region",
    "--model",
    model_dir,
    "--structure",
    s,
    "--texture",
    t,
    "--mask",
    tmp_path / "mask.png",
    "--out",
    out,
  )
  got = _read(out)
  assert got.shape == (64, 64, 3)
  # The 16 px mask is resized bilinearly to 64 px: away from its edge it is exactly 1 (left) or 0 (right).
  _assert_near(got[:, :24], _expected_swap(model, s, t)[:, :24], "inside the mask")
  _assert_near(got[:, 40:], _expected_swap(model, s, s)[:, 40:], "outside the mask")


def test_edit_moves_the_texture_code_along_a_file_or_a_principal_direction(model, model_dir, files, tmp_path, capsys):
  image = files["structure"][0]
  rec = _expected_swap(model, image, image)
  direction = np.random.RandomState(0).normal(size=model.generator.global_code_ch).astype(np.float32)
  np.save(tmp_path / "d.npy", direction)
  base = ["edit", "--model", model_dir, "--image", image, "--steps", 3]
  out = _ok(capsys, *base, "--direction", tmp_path / "d.npy", "--amount", 0.5, "--out", tmp_path / "npy.png")
  assert "amounts -0.5, 0, 0.5" in out
  strip = _read(tmp_path / "npy.png")
  assert strip.shape == (64, 3 * 64, 3)
  _assert_near(strip[:, 64:128], rec, "amount 0")
  assert np.abs(strip[:, :64] - rec).max() > 10, "the edit did not change the image"
  folder = files["texture"][0].parent
  pca = ["--direction", "pca:1", "--folder", folder, "--amount", 2]
  out = _ok(capsys, *base, *pca, "--out", tmp_path / "pca.png")
  assert "principal direction 1" in out and _read(tmp_path / "pca.png").shape == (64, 3 * 64, 3)
  assert "give 2 directions (pca:0 to pca:1)" in _error(
    capsys, *base, "--direction", "pca:2", "--folder", folder, "--amount", 1, "--out", tmp_path / "x.png"
  )
  assert "needs --folder" in _error(capsys, *base, "--direction", "pca:0", "--amount", 1, "--out", tmp_path / "x.png")
  assert "expected pca:K" in _error(
    capsys, *base, "--direction", "pca:x", "--folder", folder, "--amount", 1, "--out", tmp_path / "x.png"
  )
  np.save(tmp_path / "short.npy", direction[:5])
  err = _error(capsys, *base, "--direction", tmp_path / "short.npy", "--amount", 1, "--out", tmp_path / "x.png")
  assert "short.npy" in err and f"{model.generator.global_code_ch} numbers" in err
  err = _error(capsys, *base, "--direction", image, "--amount", 1, "--out", tmp_path / "x.png")
  assert f"cannot read direction {image}: not a .npy array file" in err


def test_grayscale_and_16_bit_images_are_read_as_rgb(model, model_dir, files, tmp_path, capsys):
  gray, deep = _write(tmp_path / "gray.png", 3, mode="L"), _write(tmp_path / "deep.png", 3, mode="I;16")
  assert Image.open(deep).mode.startswith("I")
  _ok(capsys, "swap", "--model", model_dir, "--structure", gray, "--texture", deep, "--out", tmp_path / "out")
  # 16-bit samples keep their high byte: both files hold the same picture.
  _assert_near(_read(tmp_path / "out" / "gray__deep.png"), _expected_swap(model, gray, gray), "gray / 16-bit")


def test_user_mistakes_are_one_line_naming_the_culprit(model_dir, files, tmp_path, capsys):
  s, t = files["structure"][0], files["texture"][0]
  bad = tmp_path / "bad.png"
  bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
  base = ["swap", "--model", model_dir]
  assert str(bad) in _error(capsys, *base, "--structure", bad, "--texture", t, "--out", tmp_path / "o1")
  missing = tmp_path / "missing.png"
  assert f"{missing} does not exist" in _error(
    capsys, *base, "--structure", missing, "--texture", t, "--out", tmp_path / "o2"
  )
  # An output that would overwrite an input (the grid written over a structure image) is refused.
  copy = _write(tmp_path / "copy" / "s.png", 0)
  before = copy.read_bytes()
  err = _error(capsys, "grid", "--model", model_dir, "--structure", copy, "--texture", t, "--out", copy)
  assert "is the input" in err and copy.read_bytes() == before
  # swap's outputs into a folder of inputs: a.png with the folder's a__a.png would be written over a__a.png.
  _write(tmp_path / "mixed" / "a.png", 1)
  _write(tmp_path / "mixed" / "a__a.png", 2)
  err = _error(
    capsys,
    *base,
    "--structure",
    tmp_path / "mixed" / "a.png",
    "--texture",
    tmp_path / "mixed",
    "--out",
    tmp_path / "mixed",
  )
  assert "a__a.png is the input" in err
  # Model directories that are not a Swapping Autoencoder, or no model at all.
  other = checkpoint.save_models(tmp_path / "g", {"g_ema": ("stylegan2_generator", {}, {"params": {"w": np.ones(2)}})})
  err = _error(capsys, "swap", "--model", other, "--structure", s, "--texture", t, "--out", tmp_path / "o3")
  assert f"{other} is not a Swapping Autoencoder model directory" in err
  err = _error(
    capsys, "swap", "--model", tmp_path / "nothing", "--structure", s, "--texture", t, "--out", tmp_path / "o4"
  )
  assert "no model.json" in err
  # A size the encoder cannot take.
  err = _error(capsys, *base, "--structure", s, "--texture", t, "--size", 60, "--out", tmp_path / "o5")
  assert "multiples of 8" in err
