"""A key point detector for the synthetic heads, trained on renders of every appearance.

It answers "where does this image put A's key points?" whatever the image's colours, which is what the swap
benchmark needs (`jaxgeal.evaluation.swapping.structure_pck`): template matching against the true hybrid
cannot tell a right structure in wrong colours from a wrong one (benchmarks/README.md). The renderer draws pose
and appearance apart, so a detector trained on renders of many appearances with their exact key points is
colour-blind by construction.
Generated images are blurrier and noisier than renders; the training renders are blurred and noised at
random so that the detector reads their structure too, and the benchmark reports its PCK on the
autoencoder's own reconstructions beside the swap's (same artifacts, right structure).

The network is a small U-Net (two stride-2 levels) giving one heat map per key point; a key point is the
soft-argmax of its map. It is trained by the cross-entropy of each map's softmax over the pixels against a
Gaussian of 1 px around the true point, visible points only.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import ndimage

from jaxgeal.datasets import synthetic


class HeatmapNet(nn.Module):
  """(N, S, S, 3) images in [-1, 1] -> (N, S, S, P) heat-map logits; S divisible by 4."""

  num_keypoints: int
  width: int = 16

  @nn.compact
  def __call__(self, x):
    conv = lambda c, stride=1: nn.Conv(c, (3, 3), strides=stride, padding="SAME")
    w = self.width
    h1 = nn.relu(conv(w)(nn.relu(conv(w)(x))))
    h2 = nn.relu(conv(2 * w)(nn.relu(conv(2 * w, 2)(h1))))
    h3 = nn.relu(conv(4 * w)(nn.relu(conv(4 * w)(nn.relu(conv(4 * w, 2)(h2))))))
    up = lambda h, like: jax.image.resize(h, like.shape[:3] + h.shape[3:], "nearest")
    u = nn.relu(conv(2 * w)(jnp.concatenate([up(h3, h2), h2], -1)))
    u = nn.relu(conv(w)(jnp.concatenate([up(u, h1), h1], -1)))
    return nn.Conv(self.num_keypoints, (1, 1))(u)


def soft_argmax(logits):
  """(N, S, S, P) logits -> (N, P, 2) expected x, y pixel positions under each map's softmax."""
  n, s, _, p = logits.shape
  prob = jax.nn.softmax(logits.reshape(n, s * s, p), axis=1).reshape(n, s, s, p)
  t = jnp.arange(s, dtype=logits.dtype)
  return jnp.stack([jnp.einsum("nyxp,x->np", prob, t), jnp.einsum("nyxp,y->np", prob, t)], -1)


def _loss(logits, keypoints, visibility, sigma: float = 1.0):
  n, s, _, p = logits.shape
  t = jnp.arange(s, dtype=jnp.float32)
  gx = jnp.exp(-0.5 * ((t[None, :, None] - keypoints[:, None, :, 0]) / sigma) ** 2)  # (N, x, P)
  gy = jnp.exp(-0.5 * ((t[None, :, None] - keypoints[:, None, :, 1]) / sigma) ** 2)  # (N, y, P)
  target = gy[:, :, None, :] * gx[:, None, :, :]
  target = target / jnp.maximum(target.sum((1, 2), keepdims=True), 1e-12)
  logp = jax.nn.log_softmax(logits.reshape(n, s * s, p), axis=1).reshape(n, s, s, p)
  ce = -(target * logp).sum((1, 2))  # (N, P)
  return jnp.sum(ce * visibility) / jnp.maximum(visibility.sum(), 1.0)


def degrade(images: np.ndarray, rng: np.random.Generator, max_blur: float = 1.2, max_noise: float = 0.1):
  """Each image blurred by a Gaussian of sigma ~ U(0, max_blur) px and noised by N(0, U(0, max_noise)):
  what generated images look like next to renders."""
  out = np.empty_like(images)
  for i, image in enumerate(images):
    sigma = rng.uniform(0, max_blur)
    out[i] = ndimage.gaussian_filter(image, (sigma, sigma, 0)) + rng.normal(0, rng.uniform(0, max_noise), image.shape)
  return np.clip(out, -1, 1)


@dataclasses.dataclass
class KeypointDetector:
  """A trained `HeatmapNet`; `detect(images)` -> (N, P, 2) x, y pixels."""

  params: dict
  num_keypoints: int
  width: int

  def __post_init__(self):
    net = HeatmapNet(self.num_keypoints, self.width)
    self._apply = jax.jit(lambda p, x: soft_argmax(net.apply({"params": p}, x)))

  def detect(self, images, batch_size: int = 256) -> np.ndarray:
    x = np.asarray(images, np.float32)
    return np.concatenate(
      [np.asarray(self._apply(self.params, x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    )


def train(
  size: int,
  options: synthetic.RenderOptions,
  seed: int,
  num_images: int = 4096,
  steps: int = 2000,
  batch_size: int = 32,
  width: int = 16,
  learning_rate: float = 2e-3,
) -> KeypointDetector:
  """A detector trained on `num_images` degraded renders of (`seed`, `options`) at `size` px, `steps` Adam steps
  (deterministic for given arguments). Use a seed apart from the images it will be asked about."""
  data = synthetic.make_dataset(num_images, size, seed, options)
  rng = np.random.default_rng([seed, 0x4B505444])  # "KPTD"
  images = degrade(np.asarray(data["images"], np.float32), rng)
  keypoints = jnp.asarray(data["keypoints"], jnp.float32)
  visibility = jnp.asarray(data["visibility"], jnp.float32)
  images = jnp.asarray(images)
  p = keypoints.shape[1]
  net = HeatmapNet(p, width)
  params = net.init(jax.random.key(seed), images[:1])["params"]
  tx = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
  opt_state = tx.init(params)

  @jax.jit  # The data are arguments, not constants baked into the compiled step.
  def step(params, opt_state, key, images, keypoints, visibility):
    idx = jax.random.randint(key, (batch_size,), 0, num_images)
    grads = jax.grad(lambda q: _loss(net.apply({"params": q}, images[idx]), keypoints[idx], visibility[idx]))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  for key in jax.random.split(jax.random.key(seed + 1), steps):
    params, opt_state = step(params, opt_state, key, images, keypoints, visibility)
  return KeypointDetector(jax.device_get(params), p, width)
