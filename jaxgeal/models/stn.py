"""Spatial transformers of GANgealing (Peebles et al., "GAN-Supervised Dense Visual Alignment", CVPR 2022),
following `models/spatial_transformers/spatial_transformer.py` of wpeebles/gangealing at ffa6387; the trunk and
the warp heads they share are in `jaxgeal.models.stn_heads`.

§3.1 "Spatial Transformer Parameterization" and appendix B.1: T = T_flow ∘ T_sim. Both networks share the
StyleGAN2 residual-discriminator trunk (no normalisation layers) and differ in their last layers:
  * `SpatialTransformer(transform="similarity")`: trunk down to 4x4, `final_linear`, then a zero-initialised
    `warp_head.linear` regressing (o1..o4) per head, M = [[s cos r, -s sin r, tx], [s sin r, s cos r, ty]]
    with r = pi tanh(o1), s = exp(o2) (eqs. 7-11), sampled through affine_grid.
  * `SpatialTransformer(transform="flow")`: trunk to flow_size / 8 (the last ResBlock does not downsample),
    `warp_head.flow_out` (coarse flow, last conv zero-initialised, B.5) and `warp_head.mask_out` (RAFT
    convex-upsampling weights); the residual flow is upsampled x8 to flow_size and added to the identity grid.
  * `ComposedSTN`: the similarity output (at flow_size) feeds the flow STN; the flow grid is composed with the
    similarity matrix and the *original* input is sampled once with the composed grid (B.1).
Clustering (§3.2, B.2): K heads per STN. The "cartesian" policy warps every image with every head (B*K
outputs, image-major: row b*K + k); a (B, K') score array warps image b with head argmax_k' mod K only.
Test-time flipping (B.4): `forward_with_flip` keeps, per image, x or mirror(x), whichever gives the smoother
residual flow.

Regression always runs at flow_size (inputs larger than that are tent-downsampled by supersize / flow_size),
but pixels are sampled from the full-resolution input with MipmapWarp (anti-aliased, appendix B). All options
that change shapes (iters, output_resolution, padding_mode) are static Python values; everything else is
traced, so the modules jit and differentiate without host syncs. Layout: NHWC images, (N, H, W, 2) grids.
Mixed precision: `dtype` (None: the input's) is the regression networks' convolution dtype
(`jaxgeal.models.stn_heads`); warps, grids, sampling and every output are float32.
Attribute names follow upstream (`convs`, `final_conv`, `final_linear`, `warp_head`, `flow_out`, `mask_out`,
`linear`, `stns`) so that `jaxgeal.convert.gangealing.convert_stn` is a renaming.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from jaxgeal.losses.gangealing import total_variation_loss
from jaxgeal.models import layers
from jaxgeal.models.latent_learner import lerp
from jaxgeal.models.stn_heads import HIGHEST, FlowHead, SimilarityHead, default_channels, downsample_input, make_trunk
from jaxgeal.ops import mipmap, warp

Array = Any
MAX_NUM_LEVELS = 3.5  # MipmapWarp(max_num_levels=3.5) of both warp heads: levels in [0, 2.5].
WarpPolicy = str | None | Array


def head_indices(warp_policy: WarpPolicy, num_heads: int) -> Array | None:
  """None for the cartesian policy, else the (N,) head per image: argmax of the (N, K') scores, mod K.

  The modulo is upstream's: a cluster classifier with K*(1 + flips) classes can drive the STN directly.
  """
  if warp_policy is None or isinstance(warp_policy, str):
    if warp_policy not in (None, "cartesian"):
      raise ValueError(f"warp_policy must be 'cartesian' or an (N, K) score array, got {warp_policy!r}")
    return None
  scores = jnp.asarray(warp_policy)
  if scores.ndim != 2:
    raise ValueError(f"warp_policy scores must be (N, K), got shape {scores.shape}")
  return jnp.argmax(scores, axis=1) % num_heads


def _alpha(alpha, n: int) -> Array | None:
  """A scalar or (N,) alpha as an (N,) array (None stays None)."""
  return None if alpha is None else jnp.broadcast_to(jnp.asarray(alpha, jnp.float32), (n,))


def _per_row(value: Array | None, n_rows: int) -> Array | None:
  """Repeats per-image values (N, ...) for N * split image-major output rows (upstream repeat_interleave)."""
  if value is None or value.shape[0] == n_rows:
    return value
  if n_rows % value.shape[0]:
    raise ValueError(f"cannot spread {value.shape[0]} per-image values over {n_rows} warps")
  return jnp.repeat(value, n_rows // value.shape[0], axis=0)


@flax.struct.dataclass
class STNOutput:
  """What an STN forward produces; every array has one row per output warp (B, or B*K image-major).

  image: (N, Ho, Wo, C) warped input. grid: (N, Ho, Wo, 2) sampling grid applied to the source pixels.
  flow: (N, fs, fs, 2) residual flow of the (last) flow STN, None for a similarity STN.
  matrix: (N, 2, 3) similarity matrix (composed with base_warp / previous iterations; for a ComposedSTN the
    similarity part of the final warp), None for a lone flow STN without base_warp.
  oob: (N,) bool, more than 2.5% of the grid samples beyond the image (upstream's out-of-bounds check).
  intermediates: per-stage outputs of a ComposedSTN, per-iteration outputs of an iterated similarity STN
    (upstream's return_intermediates / return_sim); free under jit, unused outputs are pruned.
  """

  image: Array
  grid: Array
  flow: Array | None = None
  matrix: Array | None = None
  oob: Array | None = None
  intermediates: tuple = ()

  def __getitem__(self, name: str):
    """Dict-style access (out["image"]) for code written against upstream-like dict outputs."""
    return getattr(self, name)

  def unfold(self, num_heads: int) -> STNOutput:
    """Cartesian outputs (B*K, ...) -> (B, K, ...) (upstream's unfold=True), intermediates dropped."""
    split = lambda a: a.reshape((a.shape[0] // num_heads, num_heads) + a.shape[1:])
    return jax.tree_util.tree_map(split, self.replace(intermediates=()))


@flax.struct.dataclass
class FlipOutput:
  """`forward_with_flip`: per warp, the output of x or of mirror(x), whichever has the smoother flow.

  output: the chosen STNOutput; for mirrored rows the grid's x component is negated so that it samples the
    unmirrored input (the residual flow and matrix are those of the mirrored run, not negated); its
    intermediates are dropped.
  flipped: (N,) bool. tv / tv_flipped: (N,) total variation of the residual flow of x / mirror(x).
  inputs: the inputs, mirrored where chosen (one row per warp).
  """

  output: STNOutput
  flipped: Array
  tv: Array
  tv_flipped: Array
  inputs: Array


def mirror(x: Array) -> Array:
  """Horizontal flip of NHWC images (upstream x.flip(3) on NCHW)."""
  return x[:, :, ::-1]


def _forward_with_flip(
  forward: Callable[..., STNOutput], x: Array, input_img_for_sampling=None, **kwargs
) -> FlipOutput:
  """B.4 (unimodal test-time flips): run T on x and mirror(x), keep the one with smaller TV of the flow."""
  out = forward(x, input_img_for_sampling=input_img_for_sampling, **kwargs)
  src_f = None if input_img_for_sampling is None else mirror(input_img_for_sampling)
  out_f = forward(mirror(x), input_img_for_sampling=src_f, **kwargs)
  if out.flow is None:
    raise ValueError("forward_with_flip needs a flow STN: the flip is chosen by the smoothness of its flow")
  tv = total_variation_loss(out.flow, reduce_batch=False)
  tv_f = total_variation_loss(out_f.flow, reduce_batch=False)
  flipped = tv_f < tv  # argmin over [tv, tv_f]: ties keep x.
  # The mirrored run's grid samples mirror(x); negating x makes it sample x itself.
  out_f = out_f.replace(grid=out_f.grid * jnp.array([-1.0, 1.0], out_f.grid.dtype))
  pick = lambda a, b: jnp.where(flipped.reshape((-1,) + (1,) * (a.ndim - 1)), b, a)
  chosen = jax.tree_util.tree_map(pick, out.replace(intermediates=()), out_f.replace(intermediates=()))
  inputs = _per_row(x, flipped.shape[0])
  return FlipOutput(chosen, flipped, tv, tv_f, pick(inputs, mirror(inputs)))


class SpatialTransformer(nn.Module):
  """One STN, similarity or flow (upstream `SpatialTransformer`).

  Attributes:
    transform: "similarity" or "flow".
    flow_size: regression resolution and default output resolution (flow: the residual flow's size).
    supersize: resolution of the inputs; larger inputs are downsampled by supersize // flow_size to regress.
    channels: (resolution, width) pairs of the trunk; None: `default_channels(channel_multiplier)`.
    num_heads: K warps per STN (clustering, §3.2).
    flow_downsample: convex upsampling factor of the flow head (8).
    antialias: sample with MipmapWarp(3.5) (upstream's default) instead of plain bilinear grid_sample.
  """

  transform: str = "similarity"
  flow_size: int = 128
  supersize: int | None = None
  channels: Sequence[tuple[int, int]] | None = None
  channel_multiplier: float = 0.5
  num_heads: int = 1
  flow_downsample: int = 8
  blur_kernel: Sequence[int] = (1, 3, 3, 1)
  antialias: bool = True
  dtype: Any = None  # of the regression convolutions; params, grids and sampling stay float32

  @property
  def is_flow(self) -> bool:
    return self.transform == "flow"

  def setup(self):
    if self.transform not in ("similarity", "flow"):
      raise ValueError(f"transform must be 'similarity' or 'flow', got {self.transform!r}")
    channels = self.channels if self.channels is not None else default_channels(self.channel_multiplier)
    self.convs, self.final_conv = make_trunk(
      channels, self.flow_size, self.is_flow, self.flow_downsample, self.blur_kernel, self.dtype
    )
    c4 = dict(channels)[4]
    if self.is_flow:
      self.warp_head = FlowHead(c4, self.num_heads, self.flow_downsample, dtype=self.dtype)
    else:
      self.final_linear = layers.EqualLinear(c4 * 16, c4, activation="fused_lrelu", dtype=self.dtype)
      self.warp_head = SimilarityHead(self.num_heads)

  def predict_warp(self, x, heads=None):
    """Regression only: (N, S, 2, 3) matrices (similarity) or the (N*S, fs, fs, 2) residual flow (flow)."""
    out = downsample_input(x, self.flow_size, self.supersize)
    for conv in self.convs:
      out = conv(out)
    out = self.final_conv(out)
    if not self.is_flow:
      # Flattened in (H, W, C) order; the converter permutes upstream's (C, H, W)-ordered weight to match.
      out = self.final_linear(out.reshape(out.shape[0], -1))
    return self.warp_head(out, heads)

  def _sample(self, source, grid, padding_mode):
    if self.antialias:
      return mipmap.mipmap_warp(source, grid, padding_mode, max_num_levels=MAX_NUM_LEVELS)
    return warp.grid_sample(source, grid, padding_mode)

  def _single(self, x, source, heads, output_resolution, base_warp, alpha, padding_mode, image_bounds):
    """One regression + warp (upstream `single_forward`); rows: N*K (cartesian) or N (heads given)."""
    n = x.shape[0]
    split = self.num_heads if heads is None else 1
    rows = n * split
    out_res = output_resolution or self.flow_size
    alpha = _per_row(_alpha(alpha, n), rows)
    base = None if base_warp is None else base_warp.reshape((-1, 2, 3))
    flow = None
    if self.is_flow:
      flow = self.predict_warp(x, heads)
      ident = warp.identity_grid(self.flow_size, 1, flow.dtype)
      grid = ident + flow
      if base is not None:  # Compose with the similarity warp: [g, 1] @ M^T (B.1).
        grid = warp.apply_affine(_per_row(base, rows), grid)
      if alpha is not None:
        grid = lerp(ident, grid, alpha[:, None, None, None])
      if out_res != self.flow_size:
        # Resizing the grid rather than the warped pixels keeps the output sharp (upstream F.interpolate).
        grid = warp.resize_grid(grid, scale_factor=out_res / self.flow_size)
      matrix = base if base is None else _per_row(base, rows)
    else:
      matrix = self.predict_warp(x, heads)  # (N, S, 2, 3)
      if base is not None:  # M = M_base @ [M; 0 0 1]: the new warp acts first on the output grid.
        matrix = jnp.matmul(base[:, None], warp.make_3x3(matrix), precision=HIGHEST)
      matrix = matrix.reshape(rows, 2, 3)
      if alpha is not None:
        matrix = lerp(jnp.eye(2, 3, dtype=matrix.dtype), matrix, alpha[:, None, None])
      grid = warp.affine_grid(matrix, out_res)
    image = self._sample(_per_row(source, rows), grid, padding_mode)
    bounds = None if image_bounds is None else _per_row(jnp.asarray(image_bounds, jnp.float32), rows)
    oob = warp.warp_exceeds_image_bounds(grid, bounds)
    return STNOutput(image=image, grid=grid, flow=flow, matrix=matrix, oob=oob)

  def __call__(
    self,
    x,
    *,
    output_resolution: int | None = None,
    iters: int = 1,
    alpha=None,
    padding_mode: str = "border",
    input_img_for_sampling=None,
    base_warp=None,
    warp_policy: WarpPolicy = "cartesian",
    image_bounds=None,
  ) -> STNOutput:
    """Regresses a warp from x and applies it to the source pixels.

    Args:
      x: (N, H, W, 3) images at flow_size or supersize, values in [-1, 1].
      output_resolution: side of the output (default flow_size). Static.
      iters: similarity only: re-run the STN on its own output (at flow_size), composing the matrices and
        always sampling the original source (upstream's test-time refinement). Static.
      alpha: scalar or (N,) lerp weight between the identity (0) and the predicted warp (1) (visuals).
      padding_mode: "border", "reflection" or "zeros". Static.
      input_img_for_sampling: (N, H', W', 3) pixels to sample instead of x (e.g. full resolution).
      base_warp: (N, 2, 3) (or per-warp (N*K, 2, 3)) affine warp composed before this one.
      warp_policy: "cartesian" (every image x every head, rows b*K + k) or (N, K') scores: image n uses head
        argmax(scores[n]) mod K.
      image_bounds: optional (N, 2) (height, width) of the unpadded images for the out-of-bounds flags.

    Returns:
      STNOutput; intermediates hold one STNOutput per iteration when iters > 1.
    """
    if iters > 1 and self.is_flow:
      raise ValueError("iters > 1 is only supported for similarity STNs (as upstream)")
    source = x if input_img_for_sampling is None else input_img_for_sampling
    heads = head_indices(warp_policy, self.num_heads)
    alpha = _alpha(alpha, x.shape[0])
    out, matrix, steps = x, base_warp, []
    for it in range(iters):
      last = it == iters - 1
      step = self._single(
        out,
        source,
        heads,
        output_resolution if last else self.flow_size,
        matrix,
        alpha if last else None,
        padding_mode,
        image_bounds,
      )
      steps.append(step)
      out, matrix = step.image, step.matrix
      if heads is None and self.num_heads > 1:
        # Later iterations refine each of the B*K warps with its own head (upstream crashes here instead).
        rows = out.shape[0]
        source, alpha = _per_row(source, rows), _per_row(alpha, rows)
        image_bounds = _per_row(image_bounds if image_bounds is None else jnp.asarray(image_bounds), rows)
        heads = jnp.tile(jnp.arange(self.num_heads), rows // self.num_heads)
    return steps[-1].replace(intermediates=tuple(steps) if iters > 1 else ())

  def forward_with_flip(self, x, **kwargs) -> FlipOutput:
    """Flow STNs: see `ComposedSTN.forward_with_flip`."""
    return _forward_with_flip(self.__call__, x, **kwargs)


class ComposedSTN(nn.Module):
  """T = T_flow ∘ T_sim (B.1): similarity STN(s), optionally followed by one flow STN (`stns_0`, `stns_1`).

  Each stage regresses from the previous stage's output (at flow_size), composes its warp with the previous
  matrix and samples the original input; only the last stage uses alpha and output_resolution, only the first
  iterates. Attributes are those of `SpatialTransformer`, shared by all stages.
  """

  transforms: Sequence[str] = ("similarity", "flow")
  flow_size: int = 128
  supersize: int | None = None
  channels: Sequence[tuple[int, int]] | None = None
  channel_multiplier: float = 0.5
  num_heads: int = 1
  flow_downsample: int = 8
  blur_kernel: Sequence[int] = (1, 3, 3, 1)
  antialias: bool = True
  dtype: Any = None

  def setup(self):
    kinds = list(self.transforms)
    if not kinds or "flow" in kinds[:-1] or any(t not in ("similarity", "flow") for t in kinds):
      raise ValueError(
        f"ComposedSTN supports similarity stages optionally followed by one flow stage, got "
        f"{kinds} (as upstream, flow -> similarity and flow -> flow are not supported)"
      )
    self.stns = [
      SpatialTransformer(
        t,
        self.flow_size,
        self.supersize,
        self.channels,
        self.channel_multiplier,
        self.num_heads,
        self.flow_downsample,
        self.blur_kernel,
        self.antialias,
        self.dtype,
      )
      for t in kinds
    ]

  def __call__(
    self,
    x,
    *,
    output_resolution: int | None = None,
    iters: int = 1,
    alpha=None,
    padding_mode: str = "border",
    input_img_for_sampling=None,
    warp_policy: WarpPolicy = "cartesian",
    image_bounds=None,
  ) -> STNOutput:
    """The composed warp; arguments as `SpatialTransformer.__call__` (iters applies to the first stage).

    Returns an STNOutput whose image / grid / flow / oob are the last stage's, matrix the last similarity
    matrix (the affine part of the final grid) and intermediates the per-stage outputs (stage 0 = the
    similarity output, upstream's return_sim).
    """
    source = x if input_img_for_sampling is None else input_img_for_sampling
    heads = head_indices(warp_policy, self.num_heads)
    alpha = _alpha(alpha, x.shape[0])
    out, matrix, stages = x, None, []
    last = len(self.stns) - 1
    for i, stn in enumerate(self.stns):
      # After a cartesian first stage every row b*K + k continues with head k (upstream's eye(K) policy).
      policy = "cartesian" if heads is None else jax.nn.one_hot(heads, self.num_heads)
      stage = stn(
        out,
        output_resolution=output_resolution if i == last else None,
        iters=iters if i == 0 else 1,
        alpha=alpha if i == last else None,
        padding_mode=padding_mode,
        input_img_for_sampling=source,
        base_warp=matrix,
        warp_policy=policy,
        image_bounds=image_bounds,
      )
      stages.append(stage)
      out, matrix = stage.image, stage.matrix
      if heads is None and self.num_heads > 1:
        rows = out.shape[0]
        source, alpha = _per_row(source, rows), _per_row(alpha, rows)
        image_bounds = _per_row(image_bounds if image_bounds is None else jnp.asarray(image_bounds), rows)
        heads = jnp.tile(jnp.arange(self.num_heads), rows // self.num_heads)
    return stages[-1].replace(intermediates=tuple(stages))

  def forward_with_flip(self, x, **kwargs) -> FlipOutput:
    """B.4: per warp, T(x) or T(mirror(x)), whichever residual flow has the smaller total variation.

    kwargs are those of `__call__`; with a score policy the same scores serve both runs. The decision is
    made per output row, so with the cartesian policy and K > 1 each (image, head) pair decides on its own
    (upstream crashes there). Pure jnp.where selection: no host sync.
    """
    return _forward_with_flip(self.__call__, x, **kwargs)


# -- construction from configs (converter, trainer, model directories) ----------------------------------------

# The architecture fields shared by SpatialTransformer and ComposedSTN besides the transform(s): the one list of
# what configs, converters and model directories carry.
ARCH_KEYS = (
  "flow_size",
  "supersize",
  "channels",
  "channel_multiplier",
  "num_heads",
  "flow_downsample",
  "blur_kernel",
  "antialias",
)


def arch_kwargs(stn: nn.Module) -> dict:
  """The ARCH_KEYS constructor fields of an STN module, as its constructor takes them."""
  return {k: getattr(stn, k) for k in ARCH_KEYS}


def build_stn(transforms: str | Sequence[str] = ("similarity", "flow"), **kwargs) -> nn.Module:
  """Upstream's `get_stn`: one transform -> SpatialTransformer, several -> ComposedSTN (kwargs: ARCH_KEYS)."""
  if isinstance(transforms, str):
    transforms = [transforms]
  for key in ("channels", "blur_kernel"):
    if kwargs.get(key) is not None:  # Hashable, as Flax module fields must be (json gives lists).
      kwargs[key] = tuple(tuple(c) if isinstance(c, (list, tuple)) else c for c in kwargs[key])
  if len(transforms) == 1:
    return SpatialTransformer(transform=transforms[0], **kwargs)
  return ComposedSTN(transforms=tuple(transforms), **kwargs)


get_stn = build_stn


def from_config(config, dtype=None) -> nn.Module:
  """The module of a `config_of` / converter config, computing in `dtype` (None: the input's); keys other than
  the architecture's (notes such as test-time settings) are ignored."""
  return build_stn(config["transforms"], dtype=dtype, **{k: config[k] for k in ARCH_KEYS if k in config})


def config_of(stn: nn.Module) -> dict:
  """JSON-able architecture config of an STN module (inverse of `from_config`)."""
  transforms = list(stn.transforms) if isinstance(stn, ComposedSTN) else [stn.transform]
  arch = arch_kwargs(stn)
  channels = arch.pop("channels")
  if channels is None:
    channels = default_channels(arch["channel_multiplier"])
  del arch["channel_multiplier"]  # Resolved into the channel table.
  arch.update(
    supersize=stn.supersize or stn.flow_size,
    channels=[[int(r), int(c)] for r, c in channels if r <= stn.flow_size],
    blur_kernel=list(stn.blur_kernel),
  )
  return {"transforms": transforms, **{k: arch[k] for k in ARCH_KEYS if k in arch}}


def predict_similarity(stn: nn.Module, params, x) -> Array:
  """The first similarity stage's regressed matrices (N, K, 2, 3) for STN inputs x, without warping anything
  (what the equivariance loss compares); a flow-only STN has none."""
  if isinstance(stn, ComposedSTN):
    first = SpatialTransformer(transform=stn.transforms[0], dtype=stn.dtype, **arch_kwargs(stn))
    stn, params = first, params["stns_0"]
  if stn.transform != "similarity":
    raise ValueError("predict_similarity needs an STN whose first stage is a similarity transform")
  return stn.apply({"params": params}, x, method=stn.predict_warp)


def apply_for_training(stn: nn.Module, params, x, x_full=None, **kwargs) -> STNOutput:
  """stn(x) with params only, sampling from x_full (full-resolution pixels) when given; kwargs: __call__'s."""
  return stn.apply({"params": params}, x, input_img_for_sampling=x_full, **kwargs)
