"""GANgealing's cluster classifier (Peebles et al., CVPR 2022, §3.2 and appendix B.2, B.4).

A clustering model (K > 1) warps image b with the STN head k* = argmin_k L_align(T_k, c_k) (eq. 6). For a real
image the assignment cannot be computed (it needs the image's latent), so a classifier is trained to predict it
with cross-entropy on GAN samples labelled by that argmin. With flips (B.4) it predicts K * 2 classes: class
k + K means "head k, after mirroring the input". Architecture (upstream `ResnetClassifier`): the similarity
STN's trunk (1x1 ConvLayer, ResBlocks down to 4x4, final_conv), then `to_logits`, an EqualLinear from the
flattened 4x4 features to the classes *with* fused leaky ReLU on the logits (an upstream quirk kept for weight
compatibility). It is initialised from the similarity STN's trunk (`init_from_stn`), its head at random.

The helpers below are the host-sync-free forms of upstream's `run_flip` / `run_flip_cartesian`: they return masks and
jnp.where selections instead of boolean-indexed (dynamically shaped) batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgeal.models import layers
from jaxgeal.models import stn as stn_lib

Array = Any


class ResnetClassifier(nn.Module):
  """Predicts (cluster[, flip]) logits (N, num_classes) from NHWC images at size or supersize.

  Attributes:
    size: regression resolution (the STN's flow_size).
    num_classes: K * (1 + flips).
    supersize: input resolution; larger inputs are tent-downsampled by supersize // size (as the STN).
    channels: (resolution, width) pairs; None: `stn.default_channels(channel_multiplier)`.
    dtype: computation dtype of the convolutions and `to_logits` (None: the input's); logits come out float32.
  """

  size: int = 128
  num_classes: int = 1
  supersize: int | None = None
  channels: Sequence[tuple[int, int]] | None = None
  channel_multiplier: float = 0.5
  blur_kernel: Sequence[int] = (1, 3, 3, 1)
  dtype: Any = None

  def setup(self):
    channels = self.channels if self.channels is not None else stn_lib.default_channels(self.channel_multiplier)
    self.convs, self.final_conv = stn_lib.make_trunk(
      channels, self.size, blur_kernel=self.blur_kernel, dtype=self.dtype
    )
    c4 = dict(channels)[4]
    self.to_logits = layers.EqualLinear(c4 * 16, self.num_classes, activation="fused_lrelu", dtype=self.dtype)

  def __call__(self, x):
    out = stn_lib.downsample_input(x, self.size, self.supersize)
    for conv in self.convs:
      out = conv(out)
    out = self.final_conv(out)
    # (H, W, C) flattening; the converter permutes upstream's (C, H, W)-ordered weight to match.
    return layers.full_precision(self.to_logits(out.reshape(out.shape[0], -1)))


def run_flip(x: Array, logits: Array, num_clusters: int):
  """Upstream `run_flip`: (inputs mirrored where the predicted class is a flip class, classes, flipped).

  The logits can be passed to the STN as its warp_policy: it uses head argmax mod K.
  """
  classes = jnp.argmax(logits, axis=1)
  flipped = classes >= num_clusters
  return jnp.where(flipped[:, None, None, None], stn_lib.mirror(x), x), classes, flipped


def run_flip_cartesian(x: Array, logits: Array, num_clusters: int):
  """Upstream `run_flip_cartesian`: every image once per cluster k, mirrored where flip beats no-flip for k.

  Returns (N*K, H, W, C) image-major inputs and the (N*K, K) one-hot warp policy selecting head k for row
  b*K + k.
  """
  n = x.shape[0]
  flipped = jnp.argmax(logits.reshape(n, 2, num_clusters), axis=1) == 1  # (N, K)
  reps = jnp.repeat(x, num_clusters, axis=0)
  inputs = jnp.where(flipped.reshape(-1, 1, 1, 1), stn_lib.mirror(reps), reps)
  return inputs, jnp.tile(jnp.eye(num_clusters, dtype=x.dtype), (n, 1))


def init_from_stn(classifier_params: dict, stn_params: dict) -> dict:
  """§3.2: classifier params with the trunk (convs_*, final_conv) copied from the similarity STN.

  stn_params: params of a similarity SpatialTransformer, or of a ComposedSTN (its first stage, `stns_0`, is
  used). The trunks must have the same architecture; `to_logits` keeps its (random) initialisation.
  """
  sim = stn_params.get("stns_0", stn_params)
  out = dict(classifier_params)
  for name in classifier_params:
    if name == "to_logits":
      continue
    if name not in sim:
      raise ValueError(f"init_from_stn: the STN has no {name!r} (keys {sorted(sim)})")
    shapes = lambda t: jax.tree_util.tree_map(jnp.shape, t)
    if shapes(sim[name]) != shapes(classifier_params[name]):
      raise ValueError(f"init_from_stn: {name} differs in shape between the STN and the classifier")
    out[name] = sim[name]
  return out


def from_config(config, dtype=None) -> ResnetClassifier:
  """The module of a converter config ({size, supersize, channels, num_classes}), computing in `dtype`."""
  return ResnetClassifier(
    dtype=dtype,
    size=config["size"],
    num_classes=config["num_classes"],
    supersize=config.get("supersize"),
    channels=tuple(tuple(c) for c in config["channels"]) if config.get("channels") else None,
  )
