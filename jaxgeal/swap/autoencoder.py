"""A trained Swapping Autoencoder at test time (Park et al. 2020, §4: swapping, interpolation, editing).

`SwappingAutoencoder.load(model_dir)` rebuilds the encoder and generator of a model directory (what
`python -m jaxgeal.convert swapae` and the trainer write) and offers upstream's test-time operations
(taesungp/swapping-autoencoder-pytorch, commit 6baa180f1184ee79a6b967f9d80ee0e02a979ac7,
models/swapping_autoencoder_model.py `encode` / `decode`, evaluation/simple_swapping_evaluator.py for texture
interpolation by `util.lerp`, evaluation/structure_style_grid_generation_evaluator.py for the swap grid).

Noise: the generator adds per-pixel Gaussian noise in every styled conv. Upstream's evaluators fix it before
decoding (`fix_noise`: one N(0, 1) map per noise layer, drawn once and shared by the whole batch), so that equal
codes give equal images. We do the same from a fixed PRNG key (`noise_seed`; `decode(..., key=)` draws other
maps): an output depends only on its own codes, never on the batch it is decoded in, and reruns are identical.
The maps are drawn at the structure code's size, so they also fit codes of images larger than the training size.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from jaxgeal import checkpoint
from jaxgeal.models import swapae

ENCODER_KIND, GENERATOR_KIND = "swapae_encoder", "swapae_generator"


@functools.partial(jax.jit, static_argnums=0)
def _apply(module, variables, *args):
  """module.apply, compiled once per architecture and shapes (modules are hashable), not once per instance."""
  return module.apply(variables, *args)


def _pick(models: Mapping[str, Mapping], kind: str, preferred: str) -> str | None:
  """The name of the model of `kind`: `preferred` (E, G) when several are."""
  names = [n for n, m in models.items() if m["kind"] == kind]
  return preferred if preferred in names else (names[0] if names else None)


class SwappingAutoencoder:
  """Encoder + generator of a Swapping Autoencoder with jitted, deterministic test-time operations.

  Images are NHWC floats in [-1, 1]; structure codes are (B, H / 2^n, W / 2^n, spatial_code_ch), texture codes
  (B, global_code_ch), both as the encoder returns them (unit norm over channels).
  """

  def __init__(
    self,
    config: Mapping,
    encoder_variables,
    generator_variables,
    *,
    generator_config: Mapping | None = None,
    noise_seed: int = 0,
  ):
    # E and G share one config in converted and trained models; `generator_config` allows them to differ.
    generator_config = config if generator_config is None else generator_config
    self.config, self.generator_config = dict(config), dict(generator_config)
    self.encoder = swapae.encoder_from_config(config)
    self.generator = swapae.generator_from_config(generator_config)
    self.noise_seed = noise_seed
    self._ve = jax.tree_util.tree_map(jnp.asarray, encoder_variables)
    self._vg = jax.tree_util.tree_map(jnp.asarray, generator_variables)
    self._noise_cache: dict = {}

  @classmethod
  def load(cls, model_dir: str | os.PathLike, *, noise_seed: int = 0) -> SwappingAutoencoder:
    """The encoder and generator of a model directory (kinds swapae_encoder / swapae_generator, E and G)."""
    convert = f"python -m jaxgeal.convert swapae CHECKPOINT.pth {model_dir}"
    if not (epath.Path(model_dir) / "model.json").is_file():  # local or a bucket (gs://...)
      raise checkpoint.ModelNotFoundError(
        f"{model_dir} is not a jaxgeal model directory (no model.json); convert an "
        f"upstream Swapping Autoencoder checkpoint first: {convert}"
      )
    index = checkpoint.read_model_index(model_dir)["models"]
    e, g = _pick(index, ENCODER_KIND, "E"), _pick(index, GENERATOR_KIND, "G")
    if e is None or g is None:
      held = ", ".join(f"{n} ({m['kind']})" for n, m in index.items())
      raise checkpoint.ModelNotFoundError(
        f"{model_dir} is not a Swapping Autoencoder model directory: it holds {held}, not an {ENCODER_KIND} "
        f"and a {GENERATOR_KIND}; convert one with: {convert}"
      )
    models = checkpoint.load_models(model_dir)
    return cls(models[e][1], models[e][2], models[g][2], generator_config=models[g][1], noise_seed=noise_seed)

  # -- sizes ---------------------------------------------------------------------------------------------------

  @property
  def size(self) -> int | None:
    """The training image size (config `image_size`), or None when the model does not record it."""
    size = self.config.get("image_size")
    return int(size) if size else None

  @property
  def downsampling(self) -> int:
    """Image size / structure code size (2^num_downsampling_sp)."""
    return 2**self.encoder.num_downsampling_sp

  @property
  def min_size(self) -> int:
    """The smallest image side the encoder takes: its texture branch applies valid stride-2 3x3 convs."""
    m = 1
    for _ in range(self.encoder.num_downsampling_gl):
      m = 2 * m + 1
    return m * self.downsampling

  def check_images(self, images) -> None:
    """Raises ValueError unless `images` is (B, H, W, 3) with H, W multiples of `downsampling`, >= `min_size`."""
    shape = tuple(np.shape(images))
    if len(shape) != 4 or shape[-1] != 3:
      raise ValueError(f"expected (B, H, W, 3) images, got shape {shape}")
    h, w = shape[1:3]
    if h % self.downsampling or w % self.downsampling or min(h, w) < self.min_size:
      raise ValueError(
        f"images of {h}x{w} do not fit this encoder: sides must be multiples of {self.downsampling} and at least "
        f"{self.min_size}"
      )

  # -- codes -----------------------------------------------------------------------------------------------------

  def encode(self, images) -> tuple[jax.Array, jax.Array]:
    """(B, H, W, 3) images in [-1, 1] -> structure (B, H/n, W/n, C_s), texture (B, C_t) codes."""
    self.check_images(images)
    return _apply(self.encoder, self._ve, jnp.asarray(images, jnp.float32))

  def noise(self, structure_hw: Sequence[int], key: jax.Array | None = None) -> list[jax.Array]:
    """The generator's noise maps for a structure code of size (h, w): one (1, h f, w f, 1) N(0, 1) map per
    noise layer (f its up-sampling factor), drawn from `key` (default: PRNGKey(noise_seed)), shared by a batch."""
    h, w = (int(v) for v in structure_hw)
    cacheable = key is None
    if cacheable and (h, w) in self._noise_cache:
      return self._noise_cache[(h, w)]
    key = jax.random.PRNGKey(self.noise_seed) if key is None else key
    layers = self.generator.noise_layers()
    keys = jax.random.split(key, len(layers))
    maps = [jax.random.normal(k, (1, h * f, w * f, 1), jnp.float32) for k, (_, f) in zip(keys, layers)]
    if cacheable:
      self._noise_cache[(h, w)] = maps
    return maps

  def decode(self, structure, texture, *, key: jax.Array | None = None, noise: Sequence | None = None) -> jax.Array:
    """Codes -> (B, H, W, 3) images. Deterministic: the noise maps are `noise` (the generator's noise-layer
    order, e.g. recorded upstream maps), else `self.noise(..., key)` (a fixed key by default)."""
    structure, texture = jnp.asarray(structure, jnp.float32), jnp.asarray(texture, jnp.float32)
    if structure.ndim != 4 or texture.ndim != 2 or structure.shape[0] != texture.shape[0]:
      raise ValueError(f"decode: structure (B, h, w, C) and texture (B, C), got {structure.shape}, {texture.shape}")
    if noise is None:
      noise = self.noise(structure.shape[1:3], key)
    return _apply(self.generator, self._vg, structure, texture, list(noise))

  # -- test-time operations ----------------------------------------------------------------------------------------

  def reconstruct(self, images) -> jax.Array:
    return self.decode(*self.encode(images))

  def swap(self, structure_images, texture_images) -> jax.Array:
    """decode(structure of structure_images[i], texture of texture_images[i]); a batch of one is broadcast."""
    structure, _ = self.encode(structure_images)
    _, texture = self.encode(texture_images)
    structure, texture = _broadcast_batch(structure, texture)
    return self.decode(structure, texture)

  def mix(self, structure, texture_a, texture_b, alpha) -> jax.Array:
    """decode(structure, lerp(texture_a, texture_b, alpha)): alpha 0 keeps texture_a, 1 swaps in texture_b
    (upstream's `--texture_mix_alphas`; the generator renormalises the code). alpha: scalar or (B,)."""
    texture_a, texture_b = jnp.asarray(texture_a), jnp.asarray(texture_b)
    alpha = jnp.asarray(alpha, jnp.float32).reshape(-1, 1)
    texture = texture_a * (1.0 - alpha) + texture_b * alpha
    structure, texture = _broadcast_batch(jnp.asarray(structure), texture)
    return self.decode(structure, texture)

  def swap_region(self, structure_images, texture_images, mask) -> jax.Array:
    """Texture of texture_images only where `mask` (values in [0, 1], (H, W), (B, H, W) or (B, H, W, 1), any size:
    resized bilinearly to the output): mask * swap + (1 - mask) * reconstruction of structure_images.

    Upstream's generator modulates every layer with one global texture vector, so a texture cannot be given to
    a region inside one decode; the two decodes share the structure code (and the noise), so they agree in
    layout and the blend follows the mask without seams beyond its own softness.
    """
    structure, own = self.encode(structure_images)
    _, texture = self.encode(texture_images)
    structure_b, texture = _broadcast_batch(structure, texture)
    swapped = self.decode(structure_b, texture)
    kept = self.decode(structure, own)
    m = jnp.asarray(mask, jnp.float32)
    m = m[None] if m.ndim == 2 else m
    m = m[..., None] if m.ndim == 3 else m
    if m.shape[1:3] != swapped.shape[1:3]:
      m = jax.image.resize(m, (m.shape[0], *swapped.shape[1:3], 1), "bilinear")
    return m * swapped + (1.0 - m) * kept


def _broadcast_batch(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Equal batch sizes, or a batch of one repeated to the other's."""
  if a.shape[0] == b.shape[0]:
    return a, b
  if a.shape[0] == 1:
    return jnp.repeat(a, b.shape[0], axis=0), b
  if b.shape[0] == 1:
    return a, jnp.repeat(b, a.shape[0], axis=0)
  raise ValueError(f"batches of {a.shape[0]} and {b.shape[0]} codes: give equal batches or a batch of one")


def principal_directions(textures) -> tuple[np.ndarray, np.ndarray]:
  """PCA of texture codes (N, C): unit directions (K, C) by decreasing variance and the standard deviation of
  the codes along each (K,), K = min(N - 1, C). Each direction's sign makes its largest component positive, so
  the result does not depend on the SVD's sign choice."""
  x = np.asarray(textures, np.float64)
  if x.ndim != 2 or x.shape[0] < 2:
    raise ValueError(f"principal directions need at least two texture codes, got shape {x.shape}")
  x = x - x.mean(axis=0)
  _, s, vt = np.linalg.svd(x, full_matrices=False)
  k = min(x.shape[0] - 1, x.shape[1])
  vt, s = vt[:k], s[:k]
  signs = np.sign(vt[np.arange(k), np.argmax(np.abs(vt), axis=1)])
  return (vt * signs[:, None]).astype(np.float32), (s / np.sqrt(x.shape[0] - 1)).astype(np.float32)
