"""`Aligner`: a trained GANgealing STN applied to real images (Peebles et al., CVPR 2022, §4.1, §4.3, appendices E, G).

    aligner = Aligner.load("workdir/model")          # t_ema (+ classifier); test-time settings from its config
    out = aligner.congeal(images)                     # aligned, grid, flipped, oob (+ matrix, flow, score)
    for out in aligner.congeal_batches(chunks): ...   # the same per batch, for a stream of image chunks
    mean = aligner.average(images)                    # the average congealed image (§4.3, Fig. 1)
    q = aligner.congeal_points(images, points)        # image pixels -> congealed pixels
    p = aligner.uncongeal_points(images, q)           # congealed pixels -> image pixels
    pb = aligner.transfer_points(images_a, images_b, points_a)   # keypoint transfer (PCK-Transfer, §4.2)
    prop = aligner.propagate(images, rgba_label)      # dense label / edit propagation by splatting (§4.3)
    prop = aligner.propagate(images, rgba_label, blend="laplacian")   # seamless compositing (blend.py)

Images are (N, S, S, 3) floats in [-1, 1] at the model's input size S (its `supersize`); points are (x, y) pixels
with pixel centres at integers. Congealed points are pixels of the congealed image of side `res` (default S).
Test-time flipping (appendix B.4) keeps, per image, x or mirror(x), whichever gives the smoother residual flow;
the returned grids always sample the *unmirrored* input, so point ops need no special casing by the caller.
Clustering models (K > 1, §3.2) pick each image's head (and flip) with the cluster classifier when the model
directory holds one, else with an explicit `cluster=`.

Congealing points through a flow is the inverse of the sampling grid: upstream takes the nearest grid sample
(appendix B.7, quantised to the flow grid); here that nearest neighbour is refined with a few fixed-point steps
c <- c + (p - g(c)) (accepted only where they reduce the residual), which is exact for smooth flows.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from jaxgeal import checkpoint, xla_cpu
from jaxgeal.align import blend as blend_lib
from jaxgeal.align import splat as splat_lib
from jaxgeal.losses.gangealing import total_variation_loss
from jaxgeal.models import cluster_classifier as cls_lib
from jaxgeal.models import stn as stn_lib
from jaxgeal.ops import mipmap, warp
from jaxgeal.ops import points as pts

__all__ = ["Aligner", "ModelNotFoundError", "invert_flow_points"]
ModelNotFoundError = checkpoint.ModelNotFoundError
HOW_TO_MAKE = (
  "train one (python -m jaxgeal.main --config=configs/<name>.py --workdir=W; it exports W/model) or "
  "convert a PyTorch GANgealing checkpoint (python -m jaxgeal.convert gangealing CKPT.pt DIR)"
)


def _mirror_x(points: np.ndarray, flipped: np.ndarray, size: int) -> np.ndarray:
  """Points of images mirrored where `flipped`: x -> S - 1 - x."""
  points = np.asarray(points, np.float32)
  mirrored = points.copy()
  mirrored[..., 0] = size - 1 - mirrored[..., 0]
  return np.where(np.asarray(flipped, bool)[:, None, None], mirrored, points)


def _sample_points(grid: jax.Array, p: jax.Array) -> jax.Array:
  """(B, H, W, 2) grid at (B, P, 2) normalised points (bilinear, border)."""
  return warp.grid_sample(grid, p[:, :, None, :], padding_mode="border")[:, :, 0, :]


@functools.partial(jax.jit, static_argnames=("steps",))
def invert_flow_points(flow: jax.Array, q: jax.Array, steps: int = 4) -> jax.Array:
  """Normalised points q of the similarity-congealed frame -> congealed points c with g(c) = q.

  g = identity + residual flow. Nearest grid sample first (appendix B.7), then fixed-point refinement
  c <- c + (q - g(c)), keeping per point whichever iterate has the smallest residual.
  """
  fs = flow.shape[1]
  g = flow + warp.identity_grid(flow.shape[1:3], flow.shape[0], flow.dtype)
  idx = pts.nearest_grid_points(g, q).astype(q.dtype)
  c = (2.0 * idx + 1.0) / fs - 1.0
  best, best_err = c, jnp.sum(jnp.square(_sample_points(g, c) - q), -1)
  for _ in range(steps):
    c = c + (q - _sample_points(g, c))
    err = jnp.sum(jnp.square(_sample_points(g, c) - q), -1)
    better = err < best_err
    best, best_err = jnp.where(better[..., None], c, best), jnp.minimum(err, best_err)
  return best


class Aligner:
  """A trained STN (t_ema) with test-time settings; see the module docstring for the API."""

  def __init__(
    self,
    stn,
    stn_variables,
    config: dict,
    *,
    iters: int = 1,
    padding_mode: str = "border",
    flip: bool = True,
    classifier=None,
    classifier_variables=None,
    batch_size: int = 32,
  ):
    self.stn, self.variables, self.config = stn, stn_variables, dict(config)
    self.iters, self.padding_mode, self.batch_size = int(iters), padding_mode, int(batch_size)
    if padding_mode not in warp.PADDING_MODES:
      raise ValueError(f"padding_mode must be one of {warp.PADDING_MODES}, got {padding_mode!r}")
    self.transforms = list(config["transforms"])
    self.has_flow = "flow" in self.transforms
    self.flip = bool(flip) and self.has_flow  # The flip is chosen by the flow's smoothness (B.4).
    self.flow_size = int(config["flow_size"])
    self.size = int(config.get("supersize") or self.flow_size)
    self.num_heads = int(config.get("num_heads", 1))
    if self.iters > 1 and self.transforms == ["flow"]:
      raise ValueError("iters > 1 needs a similarity STN")
    self.classifier, self.classifier_variables = classifier, classifier_variables
    self._jitted = {}

  @classmethod
  def load(
    cls,
    model_dir,
    iters: int | None = None,
    padding_mode: str | None = None,
    flip: bool = True,
    batch_size: int = 32,
  ) -> Aligner:
    """Loads `t_ema` (and `classifier`) from a model directory; iters / padding_mode default to its `test`."""
    path = epath.Path(model_dir)  # local or a bucket (gs://...)
    if not path.exists():
      raise ModelNotFoundError(f"model directory {path} does not exist; {HOW_TO_MAKE}")
    models = checkpoint.load_models(path)
    if "t_ema" not in models:
      raise ModelNotFoundError(f"{path} holds {sorted(models)} but no STN 't_ema'; {HOW_TO_MAKE}")
    _, cfg, variables = models["t_ema"]
    test = cfg.get("test") or {}
    classifier = cvars = None
    if "classifier" in models:
      _, ccfg, cvars = models["classifier"]
      classifier = cls_lib.from_config(ccfg)
    return cls(
      stn_lib.from_config(cfg),
      variables,
      cfg,
      iters=iters if iters is not None else int(test.get("iters", 1)),
      padding_mode=padding_mode or test.get("padding_mode", "border"),
      flip=flip,
      classifier=classifier,
      classifier_variables=cvars,
      batch_size=batch_size,
    )

  # -- the forward pass ----------------------------------------------------------------------------------------

  def _forward_fn(self, out_res: int, cluster: int | None):
    key = (out_res, cluster)
    if key in self._jitted:
      return self._jitted[key]
    stn, k = self.stn, self.num_heads
    kw = dict(output_resolution=out_res, iters=self.iters, padding_mode=self.padding_mode)

    def tv_of(flow, n):
      return jnp.zeros((n,)) if flow is None else total_variation_loss(flow, reduce_batch=False)

    def fwd(variables, cvars, x):
      n = x.shape[0]
      if k > 1 and cluster is None:  # §3.2: the classifier predicts head and flip (upstream run_flip).
        logits = self.classifier.apply(cvars, x)
        xin, _, flipped = cls_lib.run_flip(x, logits, k)
        out = stn.apply(variables, xin, warp_policy=logits, **kw)
        grid = jnp.where(flipped[:, None, None, None], out.grid * jnp.array([-1.0, 1.0]), out.grid)
        return out.replace(grid=grid, intermediates=()), flipped, tv_of(out.flow, n), xin
      policy = "cartesian" if k == 1 else jnp.tile(jax.nn.one_hot(cluster, k)[None], (n, 1))
      if self.flip:
        fo = stn.apply(variables, x, method=stn.forward_with_flip, warp_policy=policy, **kw)
        return fo.output, fo.flipped, jnp.minimum(fo.tv, fo.tv_flipped), fo.inputs
      out = stn.apply(variables, x, warp_policy=policy, **kw)
      return out.replace(intermediates=()), jnp.zeros((n,), bool), tv_of(out.flow, n), x

    # XLA's own convolution kernels (jaxgeal.xla_cpu): a forward-only program, congealing 10-23 % faster on CPU.
    self._jitted[key] = jax.jit(fwd, compiler_options=xla_cpu.compiler_options())
    return self._jitted[key]

  def _check_images(self, images) -> np.ndarray:
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
      images = images[None]
    if images.ndim != 4 or images.shape[1:] != (self.size, self.size, 3):
      raise ValueError(
        f"images must be (N, {self.size}, {self.size}, 3) floats in [-1, 1] (the model's input "
        f"size); got {images.shape}. Resize them first (jaxgeal.images.load_image(path, size="
        f"{self.size}) does)."
      )
    return images

  def _check_cluster(self, cluster: int | None) -> None:
    if self.num_heads > 1 and cluster is None and self.classifier is None:
      raise ValueError(
        f"this clustering model has K={self.num_heads} heads and no cluster classifier: pass "
        f"cluster=0..{self.num_heads - 1} (CLI: --cluster)"
      )
    if cluster is not None and not 0 <= cluster < self.num_heads:
      raise ValueError(f"cluster must be in [0, {self.num_heads}), got {cluster}")

  @staticmethod
  def _pad(chunk: np.ndarray, bs: int) -> np.ndarray:
    """A chunk of at most bs images padded with zeros to bs, so that one compilation serves every batch."""
    pad = bs - len(chunk)
    return np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)]) if pad else chunk

  def congeal_batches(
    self,
    chunks,
    output_resolution: int | None = None,
    cluster: int | None = None,
    batch_size: int | None = None,
  ):
    """Congeals a stream of image chunks; returns an iterator of one `congeal` result dict per batch.

    chunks: an iterable of (n, S, S, 3) arrays (n >= 0); each is cut into batches of at most `batch_size`
    (default: the aligner's) images, padded to exactly that many, so the forward compiles once for the whole
    stream; the dicts hold the batches' real images only, in input order. Each batch is dispatched before the
    previous one is fetched, so the caller's work on a result (and the reading of the next chunk) overlaps the
    device's work on the next batch. Cluster errors are raised here; a chunk of the wrong shape raises when it
    is reached.
    """
    self._check_cluster(cluster)
    bs = int(batch_size or self.batch_size)
    if bs < 1:
      raise ValueError(f"batch_size must be at least 1, got {bs}")
    fn = self._forward_fn(output_resolution or self.size, cluster)
    return self._congeal_stream(chunks, fn, bs)

  def _congeal_stream(self, chunks, fn, bs: int):
    pending = None  # (device outputs, real count) of the batch in flight
    for chunk in chunks:
      chunk = self._check_images(chunk)
      for i in range(0, len(chunk), bs):
        batch = chunk[i : i + bs]
        outputs = fn(self.variables, self.classifier_variables, jnp.asarray(self._pad(batch, bs)))
        if pending is not None:
          yield self._fetch(*pending)
        pending = outputs, len(batch)
    if pending is not None:
      yield self._fetch(*pending)

  @staticmethod
  def _fetch(outputs, n: int) -> dict:
    """The forward's outputs of one padded batch -> numpy arrays of its first n (real) images."""
    out, flipped, score, inputs = outputs

    def real(x):
      return None if x is None else np.asarray(x)[:n]

    return dict(
      aligned=real(out.image),
      grid=real(out.grid),
      flipped=real(flipped),
      oob=real(out.oob),
      matrix=real(out.matrix),
      flow=real(out.flow),
      score=real(score),
      inputs=real(inputs),
    )

  def congeal(self, images, output_resolution: int | None = None, cluster: int | None = None) -> dict:
    """Warps images to the congealed frame (§4.1).

    Returns numpy arrays: aligned (N, R, R, 3), grid (N, R, R, 2) sampling the unmirrored inputs, flipped (N,),
    oob (N,) (warp beyond the image), matrix (N, 2, 3) similarity part (or None), flow (N, fs, fs, 2) residual
    flow (or None), score (N,) total variation of the residual flow (lower is smoother; 0 without flow) and
    inputs (the inputs, mirrored where flipped). Runs in batches of min(batch_size, N) (`congeal_batches`).
    """
    images = self._check_images(images)
    if not len(images):
      raise ValueError("congeal needs at least one image; got none")
    bs = min(self.batch_size, len(images))
    parts = list(self.congeal_batches([images], output_resolution, cluster, batch_size=bs))
    return {key: None if parts[0][key] is None else np.concatenate([p[key] for p in parts]) for key in parts[0]}

  def average(self, images, **kwargs) -> np.ndarray:
    """The average congealed image (R, R, 3) in [-1, 1]."""
    return self.congeal(images, **kwargs)["aligned"].mean(0)

  def flow_scores(self, images, **kwargs) -> np.ndarray:
    """(N,) flow-smoothness score: TV of the residual flow (lower = smoother = more reliable alignment)."""
    if not self.has_flow:
      raise ValueError("flow scores need a model with a flow STN (transforms include 'flow')")
    return self.congeal(images, **kwargs)["score"]

  # -- points ---------------------------------------------------------------------------------------------------

  def congeal_points(self, images, points, res: int | None = None, out: dict | None = None, **kwargs):
    """(N, P, 2) image pixels -> pixels of the congealed image of side `res` (default S)."""
    out = out if out is not None else self.congeal(images, **kwargs)
    res = res or self.size
    p = _mirror_x(points, out["flipped"], self.size)  # The warp was regressed on the mirrored image.
    q = pts.normalize_points(jnp.asarray(p), self.size, self.size)
    if out["matrix"] is not None:
      q = pts._apply_matrix(pts.invert_affine(jnp.asarray(out["matrix"])), q)
    if out["flow"] is not None:
      q = invert_flow_points(jnp.asarray(out["flow"]), q)
    return np.asarray(pts.unnormalize_points(q, res, res))

  def uncongeal_points(self, images, points_congealed, res: int | None = None, out: dict | None = None, **kwargs):
    """(N, P, 2) pixels of the congealed image of side `res` (default S) -> image pixels (§4.1)."""
    out = out if out is not None else self.congeal(images, **kwargs)
    res = res or self.size
    p = pts.normalize_points(jnp.asarray(points_congealed, jnp.float32), res, res)
    if out["flow"] is None and out["matrix"] is not None:
      # Closed form for a similarity STN: exact everywhere, also outside the congealed square.
      q = pts._apply_matrix(jnp.asarray(out["matrix"]), p)
      q = np.asarray(pts.unnormalize_points(q, self.size, self.size))
      return _mirror_x(q, out["flipped"], self.size)
    q = _sample_points(jnp.asarray(out["grid"]), p)  # The grid already samples the unmirrored image.
    return np.asarray(pts.unnormalize_points(q, self.size, self.size))

  def transfer_points(self, images_a, images_b, points_a, **kwargs) -> np.ndarray:
    """Keypoints of A -> B through the congealed frame (§4.2): congeal in A, uncongeal in B."""
    congealed = self.congeal_points(images_a, points_a, **kwargs)
    return self.uncongeal_points(images_b, congealed, **kwargs)

  def dense_correspondence(self, image_a, image_b, **kwargs) -> np.ndarray:
    """(S, S, 2) for every pixel of A its (x, y) match in B (image-to-image flow)."""
    s = self.size
    ys, xs = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
    grid = np.stack([xs, ys], -1).reshape(1, -1, 2).astype(np.float32)
    return self.transfer_points(np.asarray(image_a)[None], np.asarray(image_b)[None], grid, **kwargs)[0].reshape(
      s, s, 2
    )

  # -- similarity-only alignment (congeal_dataset) -----------------------------------------------------------------

  def congeal_similarity(self, images, output_resolution: int | None = None, source_sizes=None, **kwargs) -> dict:
    """Similarity-only alignment (upstream congeal_dataset): aligned, oob, scale, effective_resolution, score.

    scale is the side of the congealed square as a fraction of the image side (sqrt |det A|); the
    effective resolution is how many source pixels span it, as upstream congeal_dataset.py computes it:
    `sqrt(det M) * min(w, h)` of the original image. `source_sizes` (N,) gives min(w, h) of each original
    (before resizing to the model's input); default: the model's input size S.
    """
    out = self.congeal(images, **kwargs)
    if out["matrix"] is None:
      raise ValueError("congeal_similarity needs a similarity STN")
    res = output_resolution or self.size
    matrix = jnp.asarray(out["matrix"])
    grid = warp.affine_grid(matrix, res)
    aligned = mipmap.mipmap_warp(
      jnp.asarray(out["inputs"]), grid, self.padding_mode, max_num_levels=stn_lib.MAX_NUM_LEVELS
    )
    det = np.asarray(matrix[:, 0, 0] * matrix[:, 1, 1] - matrix[:, 0, 1] * matrix[:, 1, 0])
    scale = np.sqrt(np.abs(det))
    return dict(
      aligned=np.asarray(aligned),
      oob=np.asarray(warp.warp_exceeds_image_bounds(grid)),
      scale=scale,
      effective_resolution=scale * (self.size if source_sizes is None else np.asarray(source_sizes, np.float64)),
      score=out["score"],
      flipped=out["flipped"],
    )

  # -- dense propagation (§4.3) -------------------------------------------------------------------------------------

  def propagate(
    self,
    images,
    label,
    sigma=1.3,
    opacity: float = 0.75,
    out: dict | None = None,
    blend: str = "alpha",
    levels: int = blend_lib.DEFAULT_LEVELS,
    **kwargs,
  ) -> dict:
    """Propagates a congealed RGBA label / mask / edit into every image by Gaussian splatting.

    Args:
      images: (N, S, S, 3) images.
      label: (L, L, 4) uint8 RGBA label in the congealed frame (pixels with alpha > 0 are propagated), or any
        form `splat.label_rgba` reads: (L, L, 3) RGB is opaque, an (L, L) grayscale mask is white with the
        gray value as alpha. Any square size L; a non-square label is a ValueError.
      sigma: splat standard deviation in image pixels, scalar or (N,) per image.
      opacity: blending opacity of the composite.
      blend: how the splatted layer is composited: 'alpha' or 'laplacian' (pyramid blending with `levels`
        levels, upstream's --blend_alg; see blend.py).

    Returns:
      rgba (N, S, S, 4): propagated colours in [-1, 1] and alpha in [0, 1]; weight (N, S, S) splat weight;
      composite (N, S, S, 3) the label blended over the images; points (N, P, 2) the image pixels (x, y) where
      the label's P labelled pixels (`splat.label_points` order: row-major over alpha > 0) land, and inside
      (N, P) whether each landed inside the image (only those are splatted): the congealed -> image
      correspondences.
    """
    if blend not in blend_lib.METHODS:
      raise ValueError(f"blend must be one of {blend_lib.METHODS}, got {blend!r}")
    label = splat_lib.label_rgba(label)
    images = self._check_images(images)
    out = out if out is not None else self.congeal(images, **kwargs)
    lab_pts, values = splat_lib.label_points(label)
    n = len(images)
    if len(lab_pts) == 0:
      rgba = np.zeros(images.shape[:3] + (4,), np.float32)
      return dict(
        rgba=rgba,
        weight=np.zeros(images.shape[:3], np.float32),
        composite=images,
        points=np.zeros((n, 0, 2), np.float32),
        inside=np.zeros((n, 0), bool),
      )
    img_pts = self.uncongeal_points(images, np.broadcast_to(lab_pts, (n,) + lab_pts.shape), res=label.shape[0], out=out)
    inside = ((img_pts > -0.5) & (img_pts < self.size - 0.5)).all(-1)  # Drop points beyond the image.
    sig = np.broadcast_to(np.asarray(sigma, np.float32), (n,))
    rgba, weight = splat_lib.splat(
      img_pts, values, self.size, sig, valid=inside, radius=splat_lib.window_radius(float(sig.max()))
    )
    composite = blend_lib.blend(jnp.asarray(images), rgba, opacity, method=blend, levels=levels)
    return dict(
      rgba=np.asarray(rgba),
      weight=np.asarray(weight),
      composite=np.asarray(composite),
      points=np.asarray(img_pts, np.float32),
      inside=np.asarray(inside),
    )
