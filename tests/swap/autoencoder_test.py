"""`SwappingAutoencoder`: a converted upstream model encodes and decodes as upstream recorded; swapping, mixing
and region swaps are the compositions they are defined as; decoding is deterministic and batch-independent."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgeal import checkpoint
from jaxgeal.swap import SwappingAutoencoder, principal_directions
from tests.fixtures import assert_close, nchw_to_nhwc

ATOL = 1e-4  # as tests/models/swapae_test.py


@pytest.fixture(scope="module")
def model(model_dir):
  return SwappingAutoencoder.load(model_dir)


@pytest.fixture(scope="module")
def real(swapae_fixture):
  return jnp.asarray(nchw_to_nhwc(swapae_fixture["real"]))


def _recorded_noise(fx, model):
  by_module = {module: fx[name] for name, module in fx.meta["noise_layers"].items()}
  return [jnp.asarray(nchw_to_nhwc(by_module[f"G.{m}"])) for m, _ in model.generator.noise_layers()]


@pytest.mark.parity
def test_encode_and_decode_match_upstream(model, real, swapae_fixture):
  fx = swapae_fixture
  assert model.size == fx.meta["arrays"]["real"]["shape"][-1]
  s, t = model.encode(real)
  assert_close(s, nchw_to_nhwc(fx["structure_code"]), ATOL, "structure_code")
  assert_close(t, fx["texture_code"], ATOL, "texture_code")
  noise = _recorded_noise(fx, model)
  assert_close(model.decode(s, t, noise=noise), nchw_to_nhwc(fx["rec"]), ATOL, "rec")
  # Upstream's training hybrid: structure of each image's neighbour (0 <-> 1, 2 <-> 3), own texture.
  s_swapped = s[jnp.array([1, 0, 3, 2])]
  assert_close(model.decode(s_swapped, t, noise=noise), nchw_to_nhwc(fx["mix"]), ATOL, "mix")


@pytest.mark.parity
def test_decode_is_deterministic_batch_independent_and_uses_its_noise(model, real):
  s, t = model.encode(real)
  batch = model.decode(s, t)
  np.testing.assert_array_equal(model.decode(s, t), batch)
  for i in range(s.shape[0]):
    assert_close(model.decode(s[i : i + 1], t[i : i + 1]), batch[i : i + 1], 1e-5, f"image {i} alone")
  other = model.decode(s, t, key=jax.random.PRNGKey(1))
  assert float(jnp.max(jnp.abs(other - batch))) > 1e-3, "the noise maps do not reach the output"


@pytest.mark.parity
def test_swap_is_decode_of_structure_and_texture_codes(model, real):
  a, b = real[:2], real[2:]
  s_a, t_a = model.encode(a)
  _, t_b = model.encode(b)
  assert_close(model.swap(a, b), model.decode(s_a, t_b), 1e-6, "swap(a, b)")
  assert_close(model.swap(a, a), model.decode(s_a, t_a), 1e-6, "swap(a, a)")
  assert_close(model.reconstruct(a), model.decode(s_a, t_a), 1e-6, "reconstruct(a)")
  # A batch of one texture is given to every structure (another batch shape: another program, another rounding).
  assert_close(model.swap(a, b[:1]), model.decode(s_a, jnp.repeat(t_b[:1], 2, 0)), 1e-5, "broadcast")


@pytest.mark.parity
def test_mix_interpolates_texture_codes(model, real):
  s, t = model.encode(real[:2])
  _, t2 = model.encode(real[2:])
  assert_close(model.mix(s, t, t2, 0.0), model.decode(s, t), 1e-6, "alpha 0")
  assert_close(model.mix(s, t, t2, 1.0), model.decode(s, t2), 1e-6, "alpha 1")
  half = model.decode(s, 0.5 * (t + t2))
  assert_close(model.mix(s, t, t2, 0.5), half, 1e-6, "alpha 0.5")
  per_image = model.mix(s, t, t2, jnp.array([0.0, 1.0]))
  assert_close(per_image[0], model.decode(s, t)[0], 1e-5, "alpha per image")
  assert_close(per_image[1], model.decode(s, t2)[1], 1e-5, "alpha per image")


@pytest.mark.parity
def test_swap_region_takes_the_texture_inside_the_mask_only(model, real):
  a, b = real[:1], real[1:2]
  swapped, kept = model.swap(a, b), model.reconstruct(a)
  assert_close(model.swap_region(a, b, np.ones((8, 8))), swapped, 1e-6, "mask 1")
  assert_close(model.swap_region(a, b, np.zeros((64, 64))), kept, 1e-6, "mask 0")
  mask = np.zeros((64, 64), np.float32)
  mask[:, :32] = 1.0
  out = model.swap_region(a, b, mask)
  assert_close(out[:, :, :32], swapped[:, :, :32], 1e-6, "inside")
  assert_close(out[:, :, 32:], kept[:, :, 32:], 1e-6, "outside")


def test_image_sizes_the_encoder_cannot_take_are_refused(model_dir):
  model = SwappingAutoencoder.load(model_dir)
  with pytest.raises(ValueError, match=f"multiples of {model.downsampling}"):
    model.encode(np.zeros((1, model.size + 1, model.size, 3)))
  with pytest.raises(ValueError, match="at least"):
    model.encode(np.zeros((1, model.min_size - model.downsampling, model.min_size, 3)))
  with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
    model.encode(np.zeros((1, 64, 64)))


def test_load_names_a_directory_without_a_swapping_autoencoder(tmp_path):
  other = checkpoint.save_models(tmp_path / "g", {"g_ema": ("stylegan2_generator", {}, {"params": {"w": np.ones(2)}})})
  with pytest.raises(checkpoint.ModelNotFoundError, match=f"{other} is not a Swapping Autoencoder.*g_ema"):
    SwappingAutoencoder.load(other)
  with pytest.raises(checkpoint.ModelNotFoundError, match="no model.json"):
    SwappingAutoencoder.load(tmp_path / "missing")


def test_principal_directions_recover_the_axes_of_largest_variance():
  rng = np.random.RandomState(0)
  basis = np.linalg.qr(rng.normal(size=(6, 6)))[0]
  stds = np.array([3.0, 2.0, 1.0, 0.5, 0.2, 0.1])
  codes = (rng.normal(size=(4000, 6)) * stds) @ basis.T + 5.0
  directions, found = principal_directions(codes)
  assert directions.shape == (6, 6) and found.shape == (6,)
  np.testing.assert_allclose(directions @ directions.T, np.eye(6), atol=1e-5)
  np.testing.assert_allclose(found, stds, rtol=0.05)
  for k in range(3):
    assert abs(float(directions[k] @ basis[:, k])) > 0.99
    assert directions[k][np.argmax(np.abs(directions[k]))] > 0
  # Sign-independent: flipping the data does not flip the directions.
  np.testing.assert_allclose(principal_directions(-codes)[0][:3], directions[:3], atol=1e-5)
  assert principal_directions(codes[:3])[0].shape == (2, 6)
  with pytest.raises(ValueError, match="at least two"):
    principal_directions(codes[:1])
