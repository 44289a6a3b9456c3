"""Specification of `jaxgeal.datasets.synthetic`: a rendered object category whose ground truth is exact.

The renderer inverse-warps a canonical cartoon head; its key points are the forward map of the canonical key
points. These tests pin down what makes the data usable as a PCK benchmark: determinism, key points that
follow the rendered pixels, the mirror convention of real key point datasets, the annotation structure, and
rendering speed.
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest

from jaxgeal import images as image_io
from jaxgeal.datasets import synthetic
from jaxgeal.datasets.synthetic import RenderOptions
from jaxgeal.evaluation import pck

P = len(synthetic.KEYPOINT_NAMES)


def _assert_same_render(a, b):
  np.testing.assert_array_equal(a["image"], b["image"])
  np.testing.assert_array_equal(a["keypoints"], b["keypoints"])
  np.testing.assert_array_equal(a["visibility"], b["visibility"])
  np.testing.assert_array_equal(a["bbox"], b["bbox"])


def test_renders_are_deterministic_per_seed_and_index():
  _assert_same_render(synthetic.render(7, 3, 32), synthetic.render(7, 3, 32))
  base = synthetic.render(7, 3, 32)["image"]
  assert not np.array_equal(base, synthetic.render(8, 3, 32)["image"]), "another seed, another image"
  assert not np.array_equal(base, synthetic.render(7, 4, 32)["image"]), "another index, another image"
  a, b = synthetic.make_dataset(6, 32, seed=2), synthetic.make_dataset(6, 32, seed=2)
  for key in ("images", "keypoints", "visibility", "bbox", "pairs"):
    np.testing.assert_array_equal(a[key], b[key])


def test_an_option_changes_only_what_it_names():
  # Resolution: same picture, key points scale about the pixel-centre convention (x + 1/2) * 2 - 1/2.
  small, large = synthetic.render(1, 5, 32), synthetic.render(1, 5, 64)
  np.testing.assert_allclose(large["keypoints"], (small["keypoints"] + 0.5) * 2 - 0.5, atol=1e-4)
  # No deformation: same pose, and the warp is a pure similarity (all distances scale by one factor).
  rigid = synthetic.render(1, 5, 64, RenderOptions(deformation=0.0))
  c = synthetic.CANONICAL_KEYPOINTS
  k = rigid["warp"].to_image(c)
  ratio = np.linalg.norm(k[1:] - k[:-1], axis=-1) / np.linalg.norm(c[1:] - c[:-1], axis=-1)
  np.testing.assert_allclose(ratio, rigid["warp"].scale, rtol=1e-9)
  assert rigid["warp"].angle == large["warp"].angle and rigid["mirrored"] == large["mirrored"]
  assert np.abs(rigid["keypoints"] - large["keypoints"]).max() > 0.5, "the default deformation is visible"


def test_max_clutter_removes_background_shapes_and_keeps_everything_else():
  # Index with clutter under the default (found by search so the test does not depend on one draw).
  index = next(
    i
    for i in range(50)
    if np.abs(
      synthetic.render(3, i, 32)["image"] - synthetic.render(3, i, 32, RenderOptions(max_clutter=0))["image"]
    ).max()
    > 0.1
  )
  full, plain = synthetic.render(3, index, 32), synthetic.render(3, index, 32, RenderOptions(max_clutter=0))
  np.testing.assert_array_equal(full["keypoints"], plain["keypoints"])
  np.testing.assert_array_equal(full["mask"], plain["mask"])
  inside = full["mask"] == 1.0  # pixels fully covered by the object do not see the background
  np.testing.assert_array_equal(full["image"][inside], plain["image"][inside])
  with pytest.raises(ValueError, match="max_clutter"):
    synthetic.render(3, 0, 32, RenderOptions(max_clutter=7))


def test_without_background_noise_the_background_is_a_plain_gradient_and_the_rest_is_unchanged():
  options = RenderOptions(max_clutter=0)
  smooth = dataclasses.replace(options, background_noise=False)
  index = next(i for i in range(50) if synthetic._draw(np.random.default_rng([3, i]))["bg_noise_amp"] > 0.2)
  noisy, plain = synthetic.render(3, index, 32, options), synthetic.render(3, index, 32, smooth)
  np.testing.assert_array_equal(noisy["keypoints"], plain["keypoints"])
  np.testing.assert_array_equal(noisy["mask"], plain["mask"])
  inside = noisy["mask"] == 1.0
  np.testing.assert_array_equal(noisy["image"][inside], plain["image"][inside])
  outside = noisy["mask"] == 0.0
  assert np.abs(noisy["image"][outside] - plain["image"][outside]).max() > 0.05
  # What is left is linear in the pixel position along one direction (clipped at 0 and 1): its second
  # differences vanish away from the clip and the object (exactly, up to the box filter's rounding).
  bg = plain["image"].astype(np.float64)
  free = outside[1:-1, 1:-1] & outside[:-2, 1:-1] & outside[2:, 1:-1]
  dyy = bg[2:, 1:-1] - 2 * bg[1:-1, 1:-1] + bg[:-2, 1:-1]
  assert np.abs(dyy[free]).max() < 2e-2
  with pytest.raises(ValueError, match="background_noise must be True or False, got 'no'"):
    RenderOptions(background_noise="no")


def test_without_fur_texture_every_head_is_plain_and_the_rest_is_unchanged():
  options = RenderOptions(max_clutter=0)
  smooth = dataclasses.replace(options, fur_texture=False)
  textured = [i for i in range(20) if synthetic._draw(np.random.default_rng([3, i]))["texture_kind"] != 0]
  plain = next(i for i in range(20) if i not in textured)
  np.testing.assert_array_equal(
    synthetic.render(3, plain, 32, smooth)["image"], synthetic.render(3, plain, 32, options)["image"]
  )
  for index in textured[:3]:
    a, b = synthetic.render(3, index, 32, options), synthetic.render(3, index, 32, smooth)
    np.testing.assert_array_equal(a["keypoints"], b["keypoints"])
    np.testing.assert_array_equal(a["mask"], b["mask"])
    outside = a["mask"] == 0.0
    np.testing.assert_array_equal(a["image"][outside], b["image"][outside])
    assert np.abs(a["image"] - b["image"]).max() > 0.1  # the stripes, spots or blotches are gone
  with pytest.raises(ValueError, match="fur_texture must be True or False, got 1"):
    RenderOptions(fur_texture=1)


def test_render_options_are_the_category_frozen_and_json_round_trips():
  options = RenderOptions(scale_range=[0.2, 0.3], appearance_of=[3, 5])  # e.g. from a config or JSON
  assert options.scale_range == (0.2, 0.3) and options.appearance_of == (3, 5)
  assert RenderOptions(**json.loads(json.dumps(options.to_json()))) == options
  assert hash(options) == hash(RenderOptions(scale_range=(0.2, 0.3), appearance_of=(3, 5)))
  with pytest.raises(dataclasses.FrozenInstanceError):
    options.deformation = 0.1  # type: ignore[misc]
  with pytest.raises(ValueError, match="deformation must be in"):
    RenderOptions(deformation=1.0)
  # One category, several calls: the per-call mirror leaves the category's draws alone.
  mirrored = synthetic.render(3, 4, 32, options, mirror=True)
  plain = synthetic.render(3, 4, 32, options, mirror=False)
  np.testing.assert_array_equal(mirrored["image"], plain["image"][:, ::-1])


def test_closeups_enlarge_the_head_cut_off_its_outer_keypoints_and_keep_everything_else():
  _assert_same_render(synthetic.render(3, 4, 32), synthetic.render(3, 4, 32, RenderOptions(closeup_prob=0.0)))
  full = [synthetic.render(3, i, 32) for i in range(12)]
  close = [synthetic.render(3, i, 32, RenderOptions(closeup_prob=1.0)) for i in range(12)]
  lo, hi = 32 * np.array(RenderOptions().closeup_scale)  # in pixels per canonical unit
  flo, fhi = 32 * np.array(RenderOptions().scale_range)
  for f, c in zip(full, close):
    assert lo <= c["warp"].scale <= hi and fhi < lo and flo <= f["warp"].scale <= fhi
    # Same draw, other scale: the scale's uniform number maps into the other range; pose and look are the same.
    np.testing.assert_allclose((c["warp"].scale - lo) / (hi - lo), (f["warp"].scale - flo) / (fhi - flo))
    assert c["warp"].angle == f["warp"].angle and c["mirrored"] == f["mirrored"]
  assert all(f["visibility"].all() for f in full)
  assert sum((~c["visibility"]).sum() for c in close) >= 12, "ears and chin leave the frame in close-ups"
  # closeup_prob mixes both framings image by image.
  mixed = [synthetic.render(3, i, 32, RenderOptions(closeup_prob=0.5))["warp"].scale > 0.5 * 32 for i in range(200)]
  assert 80 <= sum(mixed) <= 120


def test_a_rotation_offset_makes_two_poses_none_upright_and_keeps_everything_else():
  _assert_same_render(synthetic.render(3, 4, 32), synthetic.render(3, 4, 32, RenderOptions(rotation_offset=0.0)))
  plain = [synthetic.render(3, i, 32, RenderOptions(max_rotation=15.0)) for i in range(200)]
  leaning = [synthetic.render(3, i, 32, RenderOptions(max_rotation=15.0, rotation_offset=60.0)) for i in range(200)]
  angles = np.rad2deg([r["warp"].angle for r in leaning])
  assert np.all((np.abs(angles) >= 45 - 1e-9) & (np.abs(angles) <= 75 + 1e-9)), "no head is upright"
  assert 80 <= np.sum(angles > 0) <= 120, "both leanings, equally likely"
  for p, r, a in zip(plain, leaning, angles):
    # The same uniform number: its sign picks the side, its magnitude the angle within the mode.
    u = np.rad2deg(p["warp"].angle) / 15.0
    assert np.sign(a) == np.sign(u) and abs(a) == pytest.approx(60 + 15 * (2 * abs(u) - 1))
    assert r["warp"].scale == p["warp"].scale and r["mirrored"] == p["mirrored"]
  # Key points still follow the warp (the exact-ground-truth property, at the new angles).
  r = leaning[0]
  np.testing.assert_allclose(r["keypoints"], r["warp"].to_image(synthetic.CANONICAL_KEYPOINTS), atol=1e-4)


def test_clockwise_prob_makes_a_majority_pose_from_the_same_draws():
  even = [synthetic.render(3, i, 32, RenderOptions(max_rotation=15.0, rotation_offset=60.0)) for i in range(300)]
  same = [
    synthetic.render(3, i, 32, RenderOptions(max_rotation=15.0, rotation_offset=60.0, clockwise_prob=0.5))
    for i in range(3)
  ]
  for a, b in zip(even, same):
    _assert_same_render(a, b)
  skewed = [
    synthetic.render(3, i, 32, RenderOptions(max_rotation=15.0, rotation_offset=60.0, clockwise_prob=0.7))
    for i in range(300)
  ]
  angles = np.rad2deg([r["warp"].angle for r in skewed])
  assert np.all((np.abs(angles) >= 45 - 1e-9) & (np.abs(angles) <= 75 + 1e-9))
  assert 190 <= np.sum(angles > 0) <= 230, "about 70% clockwise"
  # Within each pose the angle stays uniform over the pose's range (its mean is the offset).
  assert np.mean(angles[angles > 0]) == pytest.approx(60, abs=2.5)
  assert np.mean(angles[angles < 0]) == pytest.approx(-60, abs=3.5)
  # Same draws, lower threshold: a head that leans clockwise at 50 / 50 still leans clockwise at 70 / 30.
  assert all(b["warp"].angle > 0 for a, b in zip(even, skewed) if a["warp"].angle > 0)
  with pytest.raises(ValueError, match="clockwise_prob"):
    synthetic.render(3, 0, 32, RenderOptions(rotation_offset=60.0, clockwise_prob=1.0))


def test_appearance_of_keeps_one_look_and_varies_only_pose_and_shape():
  look = synthetic.render(3, 5, 32, mirror=False)  # unmirrored: a mirrored render flips its background too
  _assert_same_render(look, synthetic.render(3, 5, 32, RenderOptions(appearance_of=(3, 5)), mirror=False))
  for index in range(6):
    own = synthetic.render(3, index, 32, mirror=False)
    same_look = synthetic.render(3, index, 32, RenderOptions(appearance_of=(3, 5)), mirror=False)
    # Pose, shape and key points come from the image's own draw ...
    np.testing.assert_array_equal(own["keypoints"], same_look["keypoints"])
    np.testing.assert_array_equal(own["mask"], same_look["mask"])
    assert own["warp"].to_json() == same_look["warp"].to_json()
    # ... its colours from render 5: the background (pixels the head does not touch) equals render 5's there.
    outside = (same_look["mask"] == 0) & (look["mask"] == 0)
    np.testing.assert_array_equal(same_look["image"][outside], look["image"][outside])
    if index != 5:
      assert not np.array_equal(own["image"][outside], look["image"][outside])
  # Another seed (a held-out set) shows the same individual.
  other = synthetic.render(9, 0, 32, RenderOptions(appearance_of=(3, 5)), mirror=False)
  outside = (other["mask"] == 0) & (look["mask"] == 0)
  np.testing.assert_array_equal(other["image"][outside], look["image"][outside])


@pytest.mark.parametrize("mirror", [False, True])
def test_keypoints_are_the_forward_warp_of_the_canonical_keypoints(mirror):
  for index in range(4):
    r = synthetic.render(3, index, 64, mirror=mirror)
    warp = r["warp"]
    np.testing.assert_allclose(warp.to_image(synthetic.CANONICAL_KEYPOINTS), r["keypoints"], atol=1e-4)
    # The forward and inverse maps are exact inverses (forward is solved iteratively).
    grid = np.stack(np.meshgrid(np.arange(64.0), np.arange(64.0)), -1)
    assert np.abs(warp.to_image(warp.to_canonical(grid)) - grid).max() < 1e-3
    c = synthetic.CANONICAL_KEYPOINTS
    assert np.abs(warp.to_canonical(warp.to_image(c)) - c).max() * warp.scale < 1e-3
    np.testing.assert_allclose(warp.canonical_grid(), warp.to_canonical(grid))


@pytest.mark.parametrize("mirror", [False, True])
def test_a_marker_rendered_at_a_canonical_keypoint_appears_at_the_reported_keypoint(mirror):
  # Render, through each image's own warp, a small disc around canonical key point k; the intensity centroid
  # of the rendered disc must sit on the reported key point. This ties the pixels to the annotations.
  size, radius = 128, 0.05
  for index, k in [(0, 4), (1, 9), (2, 0), (3, 10)]:
    centre = synthetic.CANONICAL_KEYPOINTS[k]
    shader = lambda c, centre=centre: (np.sum((c - centre) ** 2, -1) <= radius**2).astype(np.float32)[:, None]
    r = synthetic.render(5, index, size, mirror=mirror, supersample=4, shader=shader)
    weight = r["image"][..., 0]
    assert weight.sum() > 10, "the marker is visible"
    ys, xs = np.mgrid[0:size, 0:size]
    centroid = np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()
    assert np.linalg.norm(centroid - r["keypoints"][k]) < 0.5, (index, k, centroid, r["keypoints"][k])


def test_the_mirror_permutation_swaps_left_and_right_names_and_reflects_the_canonical_layout():
  perm = synthetic.MIRROR_PERMUTATION
  np.testing.assert_array_equal(perm[perm], np.arange(P))  # An involution.
  for i, j in enumerate(perm):
    name = synthetic.KEYPOINT_NAMES[i]
    assert synthetic.KEYPOINT_NAMES[j] == name.replace("left", "#").replace("right", "left").replace("#", "right")
  np.testing.assert_allclose(synthetic.CANONICAL_KEYPOINTS[perm], synthetic.CANONICAL_KEYPOINTS * [-1, 1])


def test_mirroring_flips_the_image_and_relabels_left_and_right_keypoints():
  for index in range(4):
    plain, mirrored = (
      synthetic.render(4, index, 48, RenderOptions(occluder_prob=1.0), mirror=m) for m in (False, True)
    )
    assert mirrored["mirrored"] and not plain["mirrored"]
    np.testing.assert_array_equal(mirrored["image"], plain["image"][:, ::-1])
    np.testing.assert_array_equal(mirrored["mask"], plain["mask"][:, ::-1])
    # The mirrored image's annotation is the flipped one with left/right labels swapped, as in SPair/CUB.
    np.testing.assert_allclose(mirrored["keypoints"], synthetic.mirror_keypoints(plain["keypoints"], 48), atol=1e-4)
    np.testing.assert_array_equal(mirrored["visibility"], plain["visibility"][synthetic.MIRROR_PERMUTATION])
    b = plain["bbox"]
    np.testing.assert_allclose(mirrored["bbox"], [47 - b[2], b[1], 47 - b[0], b[3]], atol=1e-5)
    # So "left" stays on the viewer's left (rotations are below 90 degrees).
    left, right = synthetic.KEYPOINT_NAMES.index("left_eye"), synthetic.KEYPOINT_NAMES.index("right_eye")
    for r in (plain, mirrored):
      assert r["keypoints"][left, 0] < r["keypoints"][right, 0]


def test_the_markings_make_mirror_twins_distinguishable():
  # Upright, undeformed and centred, the creature's silhouette is mirror symmetric without its markings;
  # the bow on its left breaks the symmetry, so the mirror twin differs (flip inference has a signal).
  pose = dict(deformation=0.0, max_rotation=0.0, max_translation=0.0)
  for index in range(3):
    plain = synthetic.render(0, index, 64, RenderOptions(asymmetric=False, **pose), mirror=False)["mask"]
    marked = synthetic.render(0, index, 64, RenderOptions(asymmetric=True, **pose), mirror=False)["mask"]
    np.testing.assert_array_equal(plain, plain[:, ::-1])
    assert np.abs(marked - marked[:, ::-1]).sum() > 2.0  # Pixels of silhouette coverage.


def test_dataset_annotation_structure():
  n, size = 12, 40
  ds = synthetic.make_dataset(n, size, seed=3, options=RenderOptions(occluder_prob=0.5))
  assert ds["images"].shape == (n, size, size, 3) and ds["images"].dtype == np.float32
  assert ds["images"].min() >= -1 and ds["images"].max() <= 1
  assert ds["keypoints"].shape == (n, P, 2) and ds["keypoints"].dtype == np.float32
  assert ds["visibility"].shape == (n, P) and ds["visibility"].dtype == bool
  assert ds["bbox"].shape == (n, 4) and ds["masks"].shape == (n, size, size)
  assert ds["mirrored"].shape == (n,) and 0 < ds["mirrored"].sum() < n
  assert ds["keypoint_names"] == list(synthetic.KEYPOINT_NAMES) and ds["threshold"] == "bbox"
  np.testing.assert_array_equal(ds["permutation"], synthetic.MIRROR_PERMUTATION)
  assert ds["pairs"].shape == (n, 2) and np.all(ds["pairs"][:, 0] != ds["pairs"][:, 1])
  assert ds["pairs"].min() >= 0 and ds["pairs"].max() < n
  b = ds["bbox"]
  assert np.all((b >= 0) & (b <= size - 1)) and np.all(b[:, 2:] > b[:, :2])
  np.testing.assert_allclose(ds["pck_threshold"], np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]))
  # Visible key points lie in the image and in the object's box.
  k, v = ds["keypoints"], ds["visibility"]
  assert np.all((k[v] >= -0.5) & (k[v] < size - 0.5))
  box = np.repeat(b[:, None], P, 1)[v]
  assert np.all(k[v] >= box[:, :2] - 0.5) and np.all(k[v] <= box[:, 2:] + 0.5)
  # The box is tight: the silhouette (mask coverage) reaches each of its sides.
  for mask, (x0, y0, x1, y1) in zip(ds["masks"], b):
    cols, rows = np.flatnonzero(mask.max(0) > 0), np.flatnonzero(mask.max(1) > 0)
    assert abs(cols[0] - x0) <= 1.5 and abs(cols[-1] - x1) <= 1.5
    assert abs(rows[0] - y0) <= 1.5 and abs(rows[-1] - y1) <= 1.5
  for i in range(n):
    np.testing.assert_allclose(ds["warps"][i].to_image(synthetic.CANONICAL_KEYPOINTS), k[i], atol=1e-4)


def test_occluders_hide_the_keypoints_under_them():
  hidden = 0
  for index in range(20):
    clear = synthetic.render(9, index, 48, RenderOptions(occluder_prob=0.0))
    occluded = synthetic.render(9, index, 48, RenderOptions(occluder_prob=1.0))
    np.testing.assert_array_equal(clear["keypoints"], occluded["keypoints"])
    assert np.all(occluded["visibility"] <= clear["visibility"])
    hidden += int(np.sum(clear["visibility"] & ~occluded["visibility"]))
  assert hidden > 0


def test_exact_transfer_between_any_two_renders():
  ds = synthetic.make_dataset(6, 48, seed=11, options=RenderOptions(mirror_prob=0.5))
  assert 0 < ds["mirrored"].sum() < 6, "both orientations present"
  for a in range(6):
    for b in range(6):
      got = synthetic.transfer_points(ds["warps"][a], ds["warps"][b], ds["keypoints"][a])
      np.testing.assert_allclose(got, ds["keypoints"][b], atol=1e-3)


def test_write_folder_is_an_image_folder_with_pck_annotations(tmp_path):
  path = synthetic.write_folder(tmp_path / "synth", n=4, size=32, seed=5, options=RenderOptions(occluder_prob=1.0))
  ds = synthetic.make_dataset(4, 32, seed=5, options=RenderOptions(occluder_prob=1.0))
  assert sorted(p.name for p in path.parent.glob("*.png")) == [f"{i:06d}.png" for i in range(4)]
  loaded = pck.load_annotations(path.parent, load_images=True)
  np.testing.assert_array_equal(image_io.to_uint8(loaded["images"]), image_io.to_uint8(ds["images"]))
  v = ds["visibility"]
  np.testing.assert_array_equal(loaded["visibility"], v)
  np.testing.assert_allclose(loaded["keypoints"][v], ds["keypoints"][v])
  assert np.all(np.isnan(loaded["keypoints"][~v])), "invisible key points are written as null"
  for key in ("bbox", "pck_threshold", "pairs", "permutation", "mirrored"):
    np.testing.assert_allclose(loaded[key], ds[key])
  assert loaded["threshold"] == "bbox" and loaded["keypoint_names"] == ds["keypoint_names"]
  doc = json.loads(path.read_text())
  assert doc["category"] == synthetic.CATEGORY and doc["generator"]["seed"] == 5
  # The generator record renders the same folder again: its options are the category's, in full.
  gen = doc["generator"]
  assert gen == synthetic.generator_spec(4, 32, 5, RenderOptions(occluder_prob=1.0))
  assert RenderOptions(**gen["options"]) == RenderOptions(occluder_prob=1.0)
  warp = synthetic.Warp.from_json(doc["images"][2]["warp"])
  np.testing.assert_allclose(warp.to_image(synthetic.CANONICAL_KEYPOINTS), ds["keypoints"][2], atol=1e-4)
  assert dataclasses.asdict(warp).keys() == dataclasses.asdict(ds["warps"][2]).keys()


def test_rendering_is_fast():
  synthetic.render(0, 0, 64)  # Warm caches.
  start = time.perf_counter()
  synthetic.make_dataset(50, 64, seed=0)
  elapsed = time.perf_counter() - start
  assert elapsed < 3.0, f"50 images at 64 px took {elapsed:.2f} s (expected ~0.3 s on one core)"
