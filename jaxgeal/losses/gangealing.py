"""GANgealing's losses (Peebles et al., "GAN-Supervised Dense Visual Alignment", CVPR 2022, §3.1-3.2, eq. 5).

The full objective for one batch of GAN-supervised pairs (x, y):
    L = E[ l(T(x), y) ] + lambda_TV L_TV(Δg) + lambda_I L_I(Δg)
with l a perceptual distance (B,) — `MSEDistance` is a stand-in for tests and CPU-sized runs. The clustering
variant (§3.2) lets each sample pick the head (and, with flips, the mirrored input) whose warp lands closest
to that head's target, and regularises only the chosen flow (upstream gangealing_cluster_loss).

Flow regularisers:

The unconstrained (flow) Spatial Transformer can fold the image onto itself; two terms of eq. 5 keep its
residual flow Δg (the grid minus the identity, (N, H, W, 2)) tame:
  * L_TV = L_Huber(Δ_x g) + L_Huber(Δ_y g): a Huber penalty (0.5 a² for a <= 1, a - 0.5 above, on the
    absolute finite differences a) that favours smooth flows but, being linear for large jumps, still allows
    the occasional sharp one (object boundaries). Each direction is averaged over its own elements, as upstream.
    The same quantity scores flow smoothness at test time (flip choice, B.4; dataset filtering, G.2).
  * L_I = ||Δg||²₂, mean-reduced: pulls the warp towards the identity.
Upstream: models/losses/loss.py::total_variation_loss, flow_identity_loss.

Not in the paper (jaxgeal additions, off in the paper configs): `LocalContrastDistance` ("lcn"), a perceptual
stand-in where no pretrained VGG can be loaded, and `equivariance_loss`, a term asking the similarity STN to
undo random similarities of its input (R M(Rx) = M(x)). How the demo uses them: benchmarks/README.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxgeal.ops import warp

Array = Any


def _huber(a: jax.Array) -> jax.Array:
  """0.5 a² for a <= 1, a - 0.5 above (a >= 0): continuous with a continuous derivative at 1."""
  return jnp.where(a <= 1.0, 0.5 * a * a, a - 0.5)


def total_variation_loss(delta_flow: jax.Array, reduce_batch: bool = True) -> jax.Array:
  """Huber total variation of a (N, H, W, 2) residual flow: a scalar, or (N,) with reduce_batch=False."""
  if delta_flow.ndim != 4 or delta_flow.shape[-1] != 2:
    raise ValueError(f"delta_flow must be (N, H, W, 2), got {delta_flow.shape}")
  axes = None if reduce_batch else (1, 2, 3)
  diff_y = _huber(jnp.abs(delta_flow[:, :-1] - delta_flow[:, 1:]))
  diff_x = _huber(jnp.abs(delta_flow[:, :, :-1] - delta_flow[:, :, 1:]))
  return jnp.mean(diff_x, axis=axes) + jnp.mean(diff_y, axis=axes)


def flow_identity_loss(delta_flow: jax.Array) -> jax.Array:
  """L_I: mean squared residual flow (encourages the identity warp)."""
  return jnp.mean(jnp.square(delta_flow))


@flax.struct.dataclass
class MSEDistance:
  """Mean squared error per sample, (B,): the fixtures' stand-in for a perceptual loss. A (leafless) pytree,
  so it passes through jit like the VGG-based losses."""

  def __call__(self, x: Array, y: Array) -> Array:
    return jnp.mean(jnp.square(x - y), axis=tuple(range(1, x.ndim)))


def _blur_matrix(n: int, sigma: float) -> np.ndarray:
  """(n, n) matrix of a 1-D Gaussian blur with edge padding: row i holds the kernel taps centred at i, those
  that fall outside [0, n) added onto the edge pixel they clamp to."""
  r = max(1, int(round(3 * sigma)))
  t = np.arange(-r, r + 1)
  k = np.exp(-0.5 * np.square(t / sigma))
  k = k / k.sum()
  m = np.zeros((n, n))
  for i in range(n):
    np.add.at(m[i], np.clip(i + t, 0, n - 1), k)
  return m


def _gaussian_blur(x: Array, sigma: float) -> Array:
  """Separable Gaussian blur per channel (NHWC), edge padding, as two small matrix products (on CPU several
  times faster, backward pass included, than summing 2r + 1 shifted slices)."""
  mh = jnp.asarray(_blur_matrix(x.shape[1], sigma), x.dtype)
  mw = jnp.asarray(_blur_matrix(x.shape[2], sigma), x.dtype)
  hi = jax.lax.Precision.HIGHEST
  x = jnp.einsum("ij,bjwc->biwc", mh, x, precision=hi)
  return jnp.einsum("kw,biwc->bikc", mw, x, precision=hi)


@flax.struct.dataclass
class LocalContrastDistance:
  """Multi-scale MSE between locally contrast-normalised images, (B,): an offline stand-in for a perceptual
  loss. Each channel becomes (x - G*x) / sqrt(G*(x - G*x)^2 + eps) (G a Gaussian of `sigma` px), at the input
  size and at `scales` - 1 further 2x average-pooled sizes; the per-scale MSEs are averaged.

  Normalising local mean and contrast keeps edges and parts (the structure LPIPS/VGG features respond to) and
  removes the smooth colour field, as SSIM's structure term does, so that matching colours (e.g. by zooming into
  a region of the right colour) does not pay as it does under plain MSE.
  """

  sigma: float = flax.struct.field(pytree_node=False, default=2.0)
  eps: float = flax.struct.field(pytree_node=False, default=1e-2)
  scales: int = flax.struct.field(pytree_node=False, default=2)

  def normalise(self, x: Array) -> Array:
    d = x - _gaussian_blur(x, self.sigma)
    return d * jax.lax.rsqrt(_gaussian_blur(jnp.square(d), self.sigma) + self.eps)

  def __call__(self, x: Array, y: Array) -> Array:
    if x.shape[1] % 2 ** (self.scales - 1) or x.shape[2] % 2 ** (self.scales - 1):
      raise ValueError(
        f"LocalContrastDistance with {self.scales} scales needs sides divisible by "
        f"{2 ** (self.scales - 1)}, got {x.shape[1]}x{x.shape[2]}"
      )
    total = 0.0
    for i in range(self.scales):
      if i:
        pool = lambda a: a.reshape(a.shape[0], a.shape[1] // 2, 2, a.shape[2] // 2, 2, a.shape[3]).mean((2, 4))
        x, y = pool(x), pool(y)
      total = total + jnp.mean(jnp.square(self.normalise(x) - self.normalise(y)), axis=(1, 2, 3))
    return total / self.scales


def random_similarity(key: jax.Array, n: int, max_rotation: float, max_log_scale: float, max_shift: float) -> jax.Array:
  """(n, 2, 3) similarity matrices with rotation (radians), log scale and shift (normalised coordinates, each
  axis) drawn uniformly from [-max, max]."""
  kr, ks, kt = jax.random.split(key, 3)
  r = jax.random.uniform(kr, (n,), minval=-max_rotation, maxval=max_rotation)
  s = jnp.exp(jax.random.uniform(ks, (n,), minval=-max_log_scale, maxval=max_log_scale))
  t = jax.random.uniform(kt, (n, 2), minval=-max_shift, maxval=max_shift)
  cos, sin = s * jnp.cos(r), s * jnp.sin(r)
  return jnp.stack([jnp.stack([cos, -sin, t[:, 0]], -1), jnp.stack([sin, cos, t[:, 1]], -1)], -2)


def equivariance_loss(
  predict: Callable,
  x: Array,
  key: jax.Array,
  *,
  max_rotation: float,
  max_log_scale: float,
  max_shift: float,
  padding_mode: str = "border",
  matrices: Array | None = None,
  zoom_neutral: bool = False,
) -> jax.Array:
  """Equivariance of the similarity STN (a jaxgeal addition, not part of the paper's objective).

  Resample each x with a random similarity R (x'(p) = x(R p)); congealing x' must land where congealing x
  does, so the regressed matrices (output -> input coordinates) satisfy R M(x') = M(x). The mean squared
  violation is returned. A self-consistency term (as in Thewlis et al., ICCV 2017, for landmark detectors): it
  asks for the whole rotation without saying which pose is canonical, which stays the target's. In matrix
  units a violation costs less when the STN zooms in (the linear part scales with it); the congealed-frame
  error M(x)^-1 R M(x') - I is the matrix error divided by s(M(x))^2 (M's linear part is s times a rotation),
  which rewards zooming out instead; `zoom_neutral` rewards neither. Measured effects: benchmarks/README.md.

  predict: (N, H, W, 3) -> (N, K, 2, 3) matrices of the first similarity stage (all K heads).
  matrices: M(x) when the caller has them already (the training forward pass); else predicted here.
  zoom_neutral: divide the linear (2 x 2) part of the violation by s(M(x)) and keep the translation column in
    input units: the value is then the same for an STN and for that STN zooming by any common factor.
  """
  n = x.shape[0]
  r = random_similarity(key, n, max_rotation, max_log_scale, max_shift).astype(x.dtype)
  x_r = warp.grid_sample(x, warp.affine_grid(r, x.shape[1:3]), padding_mode)
  if matrices is None:
    m = predict(jnp.concatenate([x, x_r]))
    matrices, m_r = m[:n], m[n:]
  else:
    m_r = predict(x_r)
  composed = jnp.matmul(warp.make_3x3(r)[:, None], warp.make_3x3(m_r), precision=jax.lax.Precision.HIGHEST)
  violation = composed[..., :2, :] - matrices
  if zoom_neutral:
    # s = sqrt|det A| of M(x)'s linear part A (a similarity); a floor keeps a degenerate STN finite.
    s = jnp.sqrt(jnp.maximum(jnp.abs(jnp.linalg.det(matrices[..., :2])), 1e-6))
    violation = jnp.concatenate([violation[..., :2] / s[..., None, None], violation[..., 2:]], -1)
  return jnp.mean(jnp.square(violation))


def _regularised(perceptual: Array, flow: Array | None, tv_weight: float, fi_weight: float) -> dict:
  if flow is None:  # similarity-only STN: no residual flow, nothing to regularise
    zero = jnp.zeros((), perceptual.dtype)
    return {"total": perceptual, "perceptual": perceptual, "tv": zero, "flow_identity": zero, "delta_flow": None}
  tv = total_variation_loss(flow)
  fi = flow_identity_loss(flow)
  return {
    "total": perceptual + tv_weight * tv + fi_weight * fi,
    "perceptual": perceptual,
    "tv": tv,
    "flow_identity": fi,
    "delta_flow": flow,
  }


def gangealing_loss(
  run_stn: Callable,
  distance: Callable,
  x: Array,
  x_full: Array | None,
  target: Array,
  *,
  tv_weight: float,
  fi_weight: float,
) -> dict:
  """Unimodal GANgealing loss (one target).

  Args:
    run_stn: (x, x_full or None) -> STNOutput with `.image` at the target's size and `.flow`.
    distance: (a, b) -> (B,) perceptual distance.
    x: STN input (B, fs, fs, 3); x_full: full-resolution pixels to sample from (or None: sample x).
    target: aligned targets y (B, fs, fs, 3).
  Returns:
    {total, perceptual, tv, flow_identity, delta_flow, aligned_pred}.
  """
  out = run_stn(x, x_full)
  perceptual = jnp.mean(distance(out.image, target))
  return dict(_regularised(perceptual, out.flow, tv_weight, fi_weight), aligned_pred=out.image)


def gangealing_cluster_loss(
  run_stn: Callable,
  distance: Callable,
  x: Array,
  x_full: Array | None,
  target: Array,
  *,
  num_heads: int,
  flips: bool,
  tv_weight: float,
  fi_weight: float,
) -> dict:
  """Clustering loss: per sample, the minimum over K heads (x 2 with flips) of the distance to that head's
  target; TV and identity terms on the chosen residual flows only (§3.2).

  target: (B*K, fs, fs, 3) image-major (row b*K + k), as the latent learner emits them. STN outputs are
  (F*B*K) rows in (flip, b, k) order with F = 2 when flipping. Returns, besides the loss terms,
  `distances` (B, F*K) with columns [unflipped heads, flipped heads], `assignment` (B,) and `aligned_pred`.
  """
  k = num_heads
  b = x.shape[0]
  if flips:
    x = jnp.concatenate([x, x[:, :, ::-1]])
    x_full = None if x_full is None else jnp.concatenate([x_full, x_full[:, :, ::-1]])
    target = jnp.concatenate([target, target])
  n_flip = 2 if flips else 1
  out = run_stn(x, x_full)
  dist = distance(out.image, target).reshape(n_flip, b, k)
  distances = jnp.transpose(dist, (1, 0, 2)).reshape(b, n_flip * k)
  assignment = jnp.argmin(distances, axis=1)
  chosen = jnp.take_along_axis(distances, assignment[:, None], axis=1)[:, 0]
  flow = None
  if out.flow is not None:
    flows = out.flow.reshape((n_flip, b, k) + out.flow.shape[1:])
    flow = flows[assignment // k, jnp.arange(b), assignment % k]
  return dict(
    _regularised(jnp.mean(chosen), flow, tv_weight, fi_weight),
    distances=distances,
    assignment=assignment,
    aligned_pred=out.image,
  )
