"""LPIPS perceptual distance and GANgealing's "vgg_ssl" variant in Flax Linen.

Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric" (CVPR 2018), v0.1, as
GANgealing (Peebles et al., CVPR 2022, §4; wpeebles/gangealing at ffa6387) vendors it in `models/losses/lpips.py`
and `models/losses/lpips_backbones.py`:

  x in [-1, 1] -> ScalingLayer (x - shift) / scale -> VGG16 trunk (torchvision `vgg16().features[:30]`)
  -> features at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 -> unit-normalise over channels
  -> squared difference -> per layer: 1x1 linear head `lin{k}` (lpips=True) or channel sum (lpips=False)
  -> spatial mean (or, spatial=True, bilinear upsampling to the input size) -> sum over the five layers.

`lpips=False` is the un-calibrated baseline that GANgealing trains with by default ("vgg_ssl", a VGG16 trunk
with SimCLR weights); its training loss divides the distance by 18 (`LOSS_SCALES`, `PerceptualLoss`).

Parameter names follow torchvision's `features` indices so that conversion is a rename
(`jaxgeal/convert/lpips.py`):
  features.{i}.weight (O, I, 3, 3) -> params/net/features_{i}/weight (3, 3, I, O)   i in CONV_INDICES
  features.{i}.bias   (O,)         -> params/net/features_{i}/bias
  lin{k}.model.1.weight (1, C, 1, 1) -> params/lin{k}/weight (C,)                     k = 0..4
Images are NHWC. Dropout in front of the linear heads is inactive (upstream runs the module in eval mode).
Mixed precision: `dtype` (None: the input's) is the VGG convolutions' dtype; the unit normalisation, the
differences, the heads and the distance are float32.
`load_perceptual_loss(kind, weights_dir)` reads a converted model directory `<weights_dir>/<kind>`.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxgeal import checkpoint

Array = Any

# torchvision vgg16().features: 'M' is MaxPool2d(2, 2); every number is Conv2d(3x3, padding 1) + ReLU.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# Module indices of the convolutions in `features` (each conv i is followed by its ReLU at i + 1).
CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
CONV_CHANNELS = tuple(c for c in _VGG16_CFG if c != "M")  # Output channels of those convolutions.
# LPIPS slices end after these ReLUs: relu1_2 (3), relu2_2 (8), relu3_3 (15), relu4_3 (22), relu5_3 (29).
# They are the ReLUs of these convolutions, i.e. the output of the last conv before each max-pool.
TAP_CONVS = (2, 7, 14, 21, 28)
LAYER_NAMES = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
CHANNELS = (64, 128, 256, 512, 512)

# ScalingLayer of LPIPS v0.1: ImageNet mean/std re-expressed for [-1, 1] inputs.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10

# GANgealing's get_perceptual_loss: 'lpips' is used as is, 'vgg_ssl' divides the distance by 18.
LOSS_SCALES = {"lpips": 1.0, "vgg_ssl": 1.0 / 18.0}


def scaling_layer(x: Array) -> Array:
  """LPIPS ScalingLayer on NHWC images in [-1, 1]."""
  shift = jnp.asarray(SHIFT, x.dtype)
  scale = jnp.asarray(SCALE, x.dtype)
  return (x - shift) / scale


def normalize_tensor(x: Array, eps: float = NORM_EPS) -> Array:
  """x / (||x||_2 over channels + eps), as upstream (the eps is added to the norm, not inside the sqrt).

  Where a feature vector is all zero (every ReLU dead, e.g. on flat padded regions) the plain sqrt has an
  infinite derivative and upstream's gradient becomes NaN (0 * inf); the double `where` keeps the value
  exact and gives that point the zero subgradient instead.
  """
  sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  positive = sq > 0
  norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
  return x / (norm + eps)


def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) weights of `F.interpolate(size=..., mode='bilinear', align_corners=False)` on one axis.

  PyTorch samples output d at source (d + 0.5) * in/out - 0.5, clamps below at 0 and repeats the last pixel;
  the weights are computed in float32 as it does for float32 inputs.
  """
  r = np.float32(n_in) / np.float32(n_out)
  src = np.maximum((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * r - np.float32(0.5), 0)
  i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
  i1 = np.minimum(i0 + 1, n_in - 1)
  w1 = (src - i0).astype(np.float32)
  m = np.zeros((n_out, n_in), np.float32)
  np.add.at(m, (np.arange(n_out), i0), np.float32(1) - w1)
  np.add.at(m, (np.arange(n_out), i1), w1)
  return m


def upsample_bilinear(x: Array, out_hw: Sequence[int]) -> Array:
  """LPIPS `upsample`: bilinear resize (align_corners=False) of (B, h, w, C) maps to (B, H, W, C).

  The maps are tiny (at most the input size), so two small dense interpolation matrices are the simplest
  exact formulation and differentiate without scatters.
  """
  _, h, w, _ = x.shape
  my = jnp.asarray(_interp_matrix(h, int(out_hw[0])), x.dtype)
  mx = jnp.asarray(_interp_matrix(w, int(out_hw[1])), x.dtype)
  return jnp.einsum("Yh,bhwc,Xw->bYXc", my, x, mx)


class Conv3x3(nn.Module):
  """torchvision Conv2d(in, out, 3, padding=1) with bias; weight (3, 3, in, out)."""

  in_ch: int
  out_ch: int
  precision: Any = None
  dtype: Any = None  # computation dtype (None: the input's); params stay float32

  @nn.compact
  def __call__(self, x):
    x = x.astype(x.dtype if self.dtype is None else self.dtype)
    # Random init (kaiming-normal fan_out as torchvision) only matters for tests; real weights are converted.
    init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
    weight = self.param("weight", init, (3, 3, self.in_ch, self.out_ch))
    bias = self.param("bias", nn.initializers.zeros, (self.out_ch,))
    y = jax.lax.conv_general_dilated(
      x,
      weight.astype(x.dtype),
      (1, 1),
      [(1, 1), (1, 1)],
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      precision=self.precision,
    )
    return y + bias.astype(y.dtype)


class VGG16Features(nn.Module):
  """torchvision `vgg16().features` up to relu5_3 (module 29); returns the five LPIPS taps (NHWC).

  Max-pooling is 2x2 stride 2 with floor (odd sizes drop the last row/column, as MaxPool2d(2, 2)). The final
  max-pool (module 30) is not part of LPIPS and is not applied.
  """

  precision: Any = None
  dtype: Any = None

  def setup(self):
    in_ch, idx = 3, 0
    for v in _VGG16_CFG:
      if v == "M":
        idx += 1
      else:
        # Named after torchvision's module index (conv i, ReLU i + 1).
        setattr(self, f"features_{idx}", Conv3x3(in_ch, v, precision=self.precision, dtype=self.dtype))
        in_ch, idx = v, idx + 2

  def __call__(self, x) -> tuple[Array, ...]:
    taps = []
    for i in CONV_INDICES:
      if i in (5, 10, 17, 24):  # A MaxPool2d sits at index i - 1.
        x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
      x = jax.nn.relu(getattr(self, f"features_{i}")(x))
      if i in TAP_CONVS:
        taps.append(x)
    return tuple(taps)


class NetLinLayer(nn.Module):
  """LPIPS `NetLinLayer`: 1x1 conv C -> 1 without bias (its Dropout is inactive in eval mode)."""

  channels: int

  @nn.compact
  def __call__(self, x):
    # Upstream's init does not matter (always loaded); non-negative weights keep a fresh model a metric.
    weight = self.param("weight", nn.initializers.constant(1.0 / self.channels), (self.channels,))
    return jnp.einsum("bhwc,c->bhw", x, weight.astype(x.dtype))[..., None]


class LPIPS(nn.Module):
  """LPIPS distance (lpips=True) or the un-calibrated channel-sum baseline (lpips=False, "vgg_ssl").

  Attributes:
    lpips: use the learned linear heads `lin0..lin4`; False sums the squared differences over channels.
    precision: `jax.lax.Precision` of the VGG convolutions (None: the backend default, which on recent GPUs
      may use reduced-precision TF32 passes for float32; pass HIGHEST for reference-exact values).
    dtype: computation dtype of the VGG convolutions (None: the input's); see the module docstring.
  """

  lpips: bool = True
  precision: Any = None
  dtype: Any = None

  def setup(self):
    self.net = VGG16Features(precision=self.precision, dtype=self.dtype)
    if self.lpips:
      for k, c in enumerate(CHANNELS):
        setattr(self, f"lin{k}", NetLinLayer(c))

  def features(self, x: Array, normalize: bool = False) -> tuple[Array, ...]:
    """The five VGG16 maps (relu1_2 .. relu5_3, before unit normalisation) of ScalingLayer(x); NHWC."""
    if normalize:
      x = 2 * x - 1
    return self.net(scaling_layer(x))

  def layer_terms(self, x: Array, y: Array, normalize: bool = False, spatial: bool = False) -> list[Array]:
    """Per-layer distances: (B,) each, or (B, H, W, 1) maps upsampled to the input size if spatial."""
    b = x.shape[0]
    # One trunk pass over both images: same arithmetic per image, twice the batch for the accelerator.
    feats = self.features(jnp.concatenate([x, y], axis=0), normalize=normalize)
    terms = []
    for k, f in enumerate(feats):
      # Normalisation in (at least) float32 even for bf16 features: the eps and the channel sum need it.
      f = normalize_tensor(f.astype(jnp.promote_types(f.dtype, jnp.float32)))
      diff = jnp.square(f[:b] - f[b:])
      if self.lpips:
        d = getattr(self, f"lin{k}")(diff)
      else:
        d = jnp.sum(diff, axis=-1, keepdims=True)
      terms.append(upsample_bilinear(d, x.shape[1:3]) if spatial else jnp.mean(d, axis=(1, 2, 3)))
    return terms

  def __call__(self, x: Array, y: Array, normalize: bool = False, spatial: bool = False, ret_per_layer: bool = False):
    """Distance between NHWC image batches x and y in [-1, 1] (in [0, 1] with normalize=True).

    Returns:
      (B,) distances, or (B, H, W, 1) maps if `spatial`. With `ret_per_layer`, (total, per_layer) where
      per_layer stacks the five true per-layer terms along a new leading axis. Upstream's `retPerLayer`
      list differs: its entry 0 aliases the total (in-place `val += res[l]`), ours is the relu1_2 term.
    """
    terms = self.layer_terms(x, y, normalize=normalize, spatial=spatial)
    total = terms[0]
    for t in terms[1:]:
      total = total + t
    if ret_per_layer:
      return total, jnp.stack(terms)
    return total


@flax.struct.dataclass
class PerceptualLoss:
  """A perceptual distance ready for a training loss: module, its variables and the loss scale.

  A pytree whose leaves are the variables, so it can be passed *as an argument* to a jitted function
  (closing over it would bake ~60 MB of VGG weights into the compiled program as constants):

    loss = load_perceptual_loss("vgg_ssl")
    step = jax.jit(lambda loss, x, y: loss(x, y).mean())
    step(loss, x, y)

  `__call__` returns `scale * distance`, (B,): for "vgg_ssl" that is GANgealing's training loss
  (LPIPS(lpips=False) / 18), for "lpips" plain LPIPS v0.1.
  """

  variables: Any
  module: LPIPS = flax.struct.field(pytree_node=False)
  kind: str = flax.struct.field(pytree_node=False, default="lpips")
  scale: float = flax.struct.field(pytree_node=False, default=1.0)

  def __call__(self, x: Array, y: Array, normalize: bool = False) -> Array:
    return self.scale * self.module.apply(self.variables, x, y, normalize=normalize)

  def distance(self, x: Array, y: Array, **kwargs):
    """The unscaled module output (all `LPIPS.__call__` options)."""
    return self.module.apply(self.variables, x, y, **kwargs)

  def features(self, x: Array, normalize: bool = False) -> tuple[Array, ...]:
    return self.module.apply(self.variables, x, normalize=normalize, method=LPIPS.features)


def make_perceptual_loss(kind: str, variables: Any, precision: Any = None, dtype: Any = None) -> PerceptualLoss:
  """'lpips' (LPIPS v0.1, linear heads) or 'vgg_ssl' (channel-sum baseline, / 18) from converted variables;
  `dtype`: the VGG convolutions' computation dtype (None: the input's)."""
  if kind not in LOSS_SCALES:
    raise ValueError(f"unknown perceptual loss {kind!r}; expected one of {sorted(LOSS_SCALES)}")
  module = LPIPS(lpips=(kind == "lpips"), precision=precision, dtype=dtype)
  return PerceptualLoss(variables=variables, module=module, kind=kind, scale=LOSS_SCALES[kind])


def vgg_ssl_loss(variables: Any, x: Array, y: Array, normalize: bool = False) -> Array:
  """GANgealing's "vgg_ssl" training loss: LPIPS(lpips=False)(x, y) / 18, shape (B,)."""
  return LOSS_SCALES["vgg_ssl"] * LPIPS(lpips=False).apply(variables, x, y, normalize=normalize)


MODEL_KIND = "lpips"  # model.json "kind" of both variants; config {"lpips": bool} tells them apart.
DEFAULT_WEIGHTS_DIR = "pretrained"

# Where the upstream files come from, for the error message of a missing model directory.
_SOURCES = {
  "lpips": (
    "python -m jaxgeal.convert lpips VGG16.pth {out} --lin lpips_vgg_v0.1.pt\n"
    "  VGG16.pth: torchvision's ImageNet VGG16 weights "
    "(https://download.pytorch.org/models/vgg16-397923af.pth)\n"
    "  lpips_vgg_v0.1.pt: LPIPS v0.1 linear weights, lpips/weights/v0.1/vgg.pth of "
    "richzhang/PerceptualSimilarity (or of the `lpips` pip package)"
  ),
  "vgg_ssl": (
    "python -m jaxgeal.convert lpips simclr_vgg_phase150.pt {out}\n"
    "  simclr_vgg_phase150.pt: GANgealing's SimCLR VGG16 trunk "
    "(http://efrosgans.eecs.berkeley.edu/gangealing/pretrained/simclr_vgg_phase150.pt)"
  ),
}


def model_dir(kind: str, weights_dir: str | os.PathLike = DEFAULT_WEIGHTS_DIR) -> pathlib.Path:
  """Where `load_perceptual_loss(kind, weights_dir)` looks: `<weights_dir>/<kind>`."""
  return pathlib.Path(weights_dir) / kind


def load_variables(kind: str, weights_dir: str | os.PathLike = DEFAULT_WEIGHTS_DIR) -> dict:
  """The converted variables of 'lpips' or 'vgg_ssl'; FileNotFoundError naming the file and the command."""
  if kind not in LOSS_SCALES:
    raise ValueError(f"unknown perceptual loss {kind!r}; expected one of {sorted(LOSS_SCALES)}")
  path = model_dir(kind, weights_dir)
  if not (path / "model.json").exists():
    raise checkpoint.ModelNotFoundError(
      f"perceptual loss {kind!r}: {path / 'model.json'} is missing (no converted weights). Convert them "
      f"with:\n  " + _SOURCES[kind].format(out=path)
    )
  models = checkpoint.load_models(path)
  if kind not in models:
    raise checkpoint.ModelNotFoundError(
      f"{path} holds {sorted(models)}, not the {kind!r} perceptual loss; "
      f"convert it with:\n  " + _SOURCES[kind].format(out=path)
    )
  model_kind, config, variables = models[kind]
  if model_kind != MODEL_KIND or bool(config.get("lpips")) != (kind == "lpips"):
    raise ValueError(f"{path}: model {kind!r} has kind {model_kind!r} / config {config}, not a {kind} perceptual loss")
  return variables


def load_perceptual_loss(
  kind: str = "lpips", weights_dir: str | os.PathLike = DEFAULT_WEIGHTS_DIR, precision: Any = None, dtype: Any = None
) -> PerceptualLoss:
  """GANgealing's `get_perceptual_loss(kind)`: a `PerceptualLoss` ((B,) = scale * distance, jit-able).

  kind 'lpips': LPIPS v0.1 (VGG16 ImageNet trunk + linear heads); 'vgg_ssl': SimCLR VGG16 trunk, channel-sum
  distance divided by 18. Weights come from `<weights_dir>/<kind>` (a model directory written by
  `python -m jaxgeal.convert lpips`).
  """
  return make_perceptual_loss(kind, load_variables(kind, weights_dir), precision=precision, dtype=dtype)
