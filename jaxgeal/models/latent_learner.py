"""The learned congealing target of GANgealing (Peebles et al. 2022, §3.1 "learning the target mode", §3.2
clustering, appendix B), weight-compatible with upstream's `DirectionInterpolator` (`ll` in checkpoints).

The target latent is constrained to the top-N principal directions of W (eq. 4):

    c = w_bar + sum_i alpha_i d_i,

with w_bar and d_i from PCA of mapped samples (upstream: 1M of them) and only the coefficients alpha learned.
Targets for an unaligned w mix c into the first `inject_index` W+ layers, y = G(mix(c, w)) with
mix_l = lerp(c, w, psi) for l < inject_index (psi annealed 1 -> 0) and w otherwise (eq. 3, appendix B). The
clustering variant learns K rows of coefficients, initialised by k-means++ (Arthur & Vassilvitskii 2007) on
"pose-only" images G([w, w_mean], inject_index) under a perceptual distance.

Three parts:
* streaming PCA (`fit_pca`, `StreamingPCA`) over batches of a `sample_w(key, batch)` callable, never holding
  the pool. method="covariance" (default) is exact PCA: mean and D x D scatter matrix merged batch by batch
  (Chan et al.'s pairwise update, which stays accurate in float32 where E[ww^T] - mu mu^T would cancel
  catastrophically for W's large mean), eigh in float64 on the host. method="incremental" reproduces
  upstream's sklearn IncrementalPCA (Ross et al. 2008 rank-N incremental SVD), whose truncation after
  every batch makes it an approximation whenever there is more than one batch;
* `LatentLearner`, the Flax module for c and the W+ targets (image-major B*K rows, as upstream);
* `kmeans_plusplus` with pluggable rendering and distance and injectable random draws.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

Array = Any
HIGHEST = jax.lax.Precision.HIGHEST  # GPUs default to TF32 for f32 matmuls (~1e-3 relative): not for PCA.


# -- PCA --------------------------------------------------------------------------------------------------


@flax.struct.dataclass
class PCA:
  """Top-N principal directions of W: components (N, D) unit rows, mean (1, D), variances (N,)."""

  components: Array
  mean: Array
  explained_variance: Array
  n_samples: Array

  def encode(self, w):
    """(B, D) -> (B, N) coordinates (w - mean) @ components^T (upstream `PCA.encode`)."""
    return jnp.matmul(w - self.mean, self.components.T, precision=HIGHEST)

  def decode(self, coeffs):
    """(B, N) -> (B, D): mean + coeffs @ components (eq. 4 for c)."""
    return self.mean + jnp.matmul(coeffs, self.components, precision=HIGHEST)


def _flip_signs(v):
  """sklearn's svd_flip(u_based_decision=False): each row's largest-|.| entry is made positive."""
  idx = jnp.argmax(jnp.abs(v), axis=1)
  signs = jnp.sign(v[jnp.arange(v.shape[0]), idx])
  return v * jnp.where(signs == 0, 1, signs)[:, None]


def _batch_stats(x, n_valid):
  """Count, mean and centred rows of a batch whose first `n_valid` rows are real (the rest are padding)."""
  mask = (jnp.arange(x.shape[0]) < n_valid).astype(x.dtype)[:, None]
  nb = jnp.asarray(n_valid, x.dtype)
  bmean = jnp.sum(x * mask, axis=0) / nb
  return nb, bmean, (x - bmean) * mask


def _merge_mean(mean, comp, step):
  """mean + step with Kahan compensation `comp`: over ~400 merges the plain float32 sum drifts by ~1e-6
  of |mean| (W's mean is large), the compensated one stays at float32 rounding."""
  y = step - comp
  t = mean + y
  return t, (t - mean) - y


class CovarianceState(NamedTuple):
  count: Array  # () float32; exact up to 2**24 samples
  mean: Array  # (D,)
  mean_comp: Array  # (D,) Kahan compensation of mean
  m2: Array  # (D, D) scatter sum_i (w_i - mean)(w_i - mean)^T


class IncrementalState(NamedTuple):
  count: Array
  mean: Array
  mean_comp: Array
  components: Array  # (N, D)
  singular_values: Array  # (N,)


@jax.jit
def _covariance_update(state: CovarianceState, x, n_valid):
  # Chan, Golub & LeVeque's pairwise merge: combine centred statistics so no large mean is ever squared.
  nb, bmean, xc = _batch_stats(x.astype(jnp.float32), n_valid)
  n = state.count
  total = n + nb
  delta = bmean - state.mean
  m2 = state.m2 + jnp.matmul(xc.T, xc, precision=HIGHEST) + jnp.outer(delta, delta) * (n * nb / total)
  return CovarianceState(total, *_merge_mean(state.mean, state.mean_comp, delta * (nb / total)), m2)


@functools.partial(jax.jit, static_argnames="n_components")
def _incremental_update(state: IncrementalState, x, n_valid, n_components):
  # sklearn IncrementalPCA.partial_fit: SVD of [S V; X - batch mean; mean correction], keep the top N rows.
  # At the first batch S = 0 and the correction is 0, so those rows are zero and change nothing.
  nb, bmean, xc = _batch_stats(x.astype(jnp.float32), n_valid)
  n = state.count
  total = n + nb
  correction = jnp.sqrt(n * nb / total) * (state.mean - bmean)
  stacked = jnp.concatenate([state.singular_values[:, None] * state.components, xc, correction[None]], 0)
  _, s, vt = jnp.linalg.svd(stacked, full_matrices=False)
  mean, comp = _merge_mean(state.mean, state.mean_comp, (bmean - state.mean) * (nb / total))
  return IncrementalState(total, mean, comp, _flip_signs(vt[:n_components]), s[:n_components])


class StreamingPCA:
  """Accumulates batches of W on device; `result()` gives the PCA. Memory O(D^2), independent of the pool."""

  def __init__(self, dim: int, n_components: int, method: str = "covariance"):
    if not 1 <= n_components <= dim:
      raise ValueError(f"StreamingPCA: n_components must be in [1, {dim}], got {n_components}")
    if method not in ("covariance", "incremental"):
      raise ValueError(f"StreamingPCA: method is 'covariance' or 'incremental', got {method!r}")
    self.dim, self.n_components, self.method = dim, n_components, method
    z = jnp.zeros((), jnp.float32)
    if method == "covariance":
      self.state = CovarianceState(z, jnp.zeros((dim,)), jnp.zeros((dim,)), jnp.zeros((dim, dim)))
    else:
      self.state = IncrementalState(
        z, jnp.zeros((dim,)), jnp.zeros((dim,)), jnp.zeros((n_components, dim)), jnp.zeros((n_components,))
      )

  def update(self, batch, n_valid: int | None = None):
    """Adds the first `n_valid` rows of `batch` (B, D) (all by default). Same shape, same compiled step."""
    n_valid = batch.shape[0] if n_valid is None else n_valid
    if self.method == "covariance":
      self.state = _covariance_update(self.state, batch, n_valid)
    else:
      self.state = _incremental_update(self.state, batch, n_valid, self.n_components)
    return self

  def result(self) -> PCA:
    n = float(self.state.count)
    if n < 2:
      raise ValueError("StreamingPCA: need at least two samples")
    mean = self.state.mean[None]
    if self.method == "incremental":
      return PCA(self.state.components, mean, self.state.singular_values**2 / (n - 1), jnp.asarray(n))
    # D = 512: a float64 eigendecomposition on the host is cheap and avoids float32 eigh error.
    cov = np.asarray(self.state.m2, np.float64) / (n - 1)
    evals, evecs = np.linalg.eigh((cov + cov.T) / 2)
    order = np.argsort(evals)[::-1][: self.n_components]
    comps = _flip_signs(jnp.asarray(evecs[:, order].T, jnp.float32))
    return PCA(comps, mean, jnp.asarray(np.maximum(evals[order], 0), jnp.float32), jnp.asarray(n))


def fit_pca(
  sample_w: Callable[[Array, int], Array],
  key,
  n_components: int,
  num_samples: int = 1_000_000,
  batch_size: int = 2560,
  method: str = "covariance",
) -> PCA:
  """PCA of `num_samples` draws of `sample_w(key, batch) -> (batch, D)` (e.g. a jitted mapping network).

  Batch i uses `fold_in(key, i)`; the last, partial batch is drawn at full size and masked, so sample_w and
  the update each compile once. Upstream: IncrementalPCA(ndirs) on G.batch_latent(1e6), batch 5 * D = 2560.
  """
  pca = None
  for i, start in enumerate(range(0, num_samples, batch_size)):
    w = sample_w(jax.random.fold_in(key, i), batch_size)
    if pca is None:
      pca = StreamingPCA(w.shape[-1], n_components, method)
    pca.update(w, min(batch_size, num_samples - start))
  if pca is None:
    raise ValueError("fit_pca: num_samples must be positive")
  return pca.result()


def sklearn_batches(n: int, batch_size: int, min_batch_size: int = 0) -> list[slice]:
  """sklearn's gen_batches: full batches; a remainder below min_batch_size joins the batch before it."""
  out, start = [], 0
  for _ in range(n // batch_size):
    end = start + batch_size
    if end + min_batch_size > n:
      continue
    out.append(slice(start, end))
    start = end
  if start < n:
    out.append(slice(start, n))
  return out


def fit_pca_arrays(w, n_components: int, batch_size: int | None = None, method: str = "covariance") -> PCA:
  """PCA of an in-memory pool (N, D), batched like sklearn's IncrementalPCA.fit (default batch 5 * D)."""
  w = jnp.asarray(w)
  pca = StreamingPCA(w.shape[1], n_components, method)
  for s in sklearn_batches(w.shape[0], batch_size or 5 * w.shape[1], n_components):
    pca.update(w[s])
  return pca.result()


# -- the target latent(s) c -------------------------------------------------------------------------------


def lerp(start, end, weight):
  """torch.lerp: exact at both ends (weight 0 gives start, weight 1 gives end, bit for bit)."""
  return jnp.where(weight < 0.5, start + weight * (end - start), end - (end - start) * (1 - weight))


class LatentLearner(nn.Module):
  """Upstream's DirectionInterpolator: K learned targets c_k = lat_mean + coefficients_k @ directions.

  Variables: params `coefficients` (K, ndirs) (upstream initialises zeros, or PCA codes of the k-means++
  centroids when clustering); collection "pca" (not trained): `directions` (ndirs, D), `lat_mean` (1, D).
  The "pca" initialisers are random placeholders, as upstream's buffers, meant to be replaced by
  `variables_from_pca` or a converted checkpoint.
  """

  num_heads: int = 1
  ndirs: int = 1
  style_dim: int = 512
  inject_index: int = 5
  n_latent: int = 14

  def setup(self):
    if not 0 <= self.inject_index <= self.n_latent:
      raise ValueError(f"LatentLearner: inject_index {self.inject_index} not in [0, {self.n_latent}]")
    self.coefficients = self.param("coefficients", nn.initializers.zeros, (self.num_heads, self.ndirs))
    rng = lambda: self.make_rng("params")
    self.directions = self.variable("pca", "directions", lambda: jax.random.normal(rng(), (self.ndirs, self.style_dim)))
    self.lat_mean = self.variable("pca", "lat_mean", lambda: jax.random.normal(rng(), (1, self.style_dim)))

  def targets(self, lat_mean=None):
    """c (K, D), eq. 4. `lat_mean` (1, D) replaces the stored PCA mean (upstream's lat_mean argument)."""
    mean = self.lat_mean.value if lat_mean is None else lat_mean
    return mean + jnp.matmul(self.coefficients, self.directions.value, precision=HIGHEST)

  def __call__(self, w, psi, lat_mean=None, unfold: bool = False):
    """Target W+ latents for unaligned latents w.

    Args:
      w: (B, D) latents, or W+ (B, L, D) with L = n_latent (each layer mixed with c on its own).
      psi: lerp weight towards w (1: w unchanged, 0: c in the injected layers); may be traced.
      lat_mean: optional (1, D) replacing the stored mean.
      unfold: return (B, K, n_latent, D) instead of (B*K, n_latent, D).
    Returns:
      (B*K, n_latent, D), row b*K + k = target of w_b under head k (image-major, as upstream): layers
      < inject_index are c_k + psi (w_b - c_k) (torch.lerp), the others w_b.
    """
    k, n = self.num_heads, self.n_latent
    if w.ndim == 2:
      w = jnp.broadcast_to(w[:, None], (w.shape[0], n, w.shape[-1]))
    if w.ndim != 3 or w.shape[1] != n:
      raise ValueError(f"LatentLearner: expected w (B, D) or (B, {n}, D), got {w.shape}")
    b = w.shape[0]
    c = self.targets(lat_mean).astype(w.dtype)
    w_rep = jnp.repeat(w, k, axis=0)  # (B*K, L, D): row b*K + k holds w_b
    c_rep = jnp.tile(c, (b, 1))[:, None]  # (B*K, 1, D): row b*K + k holds c_k
    injected = (jnp.arange(n) < self.inject_index)[None, :, None]
    out = jnp.where(injected, lerp(c_rep, w_rep, psi), w_rep)
    return out.reshape(b, k, n, -1) if unfold else out

  def target_latents(self, w, lat_mean=None, unfold: bool = False):
    """The congealing targets' latents, psi = 0: c in the injected layers, w in the rest."""
    return self(w, 0.0, lat_mean=lat_mean, unfold=unfold)


def variables_from_pca(pca: PCA, num_heads: int = 1, centroids=None) -> dict:
  """LatentLearner variables from a PCA: coefficients zero (unimodal, as upstream) or the PCA codes of the
  k-means++ centroids (K, D) (clustering, §3.2), so that each c_k starts at its centroid's projection."""
  if centroids is None:
    coeffs = jnp.zeros((num_heads, pca.components.shape[0]), jnp.float32)
  else:
    coeffs = pca.encode(jnp.asarray(centroids, jnp.float32))
  return {
    "params": {"coefficients": coeffs},
    "pca": {"directions": jnp.asarray(pca.components, jnp.float32), "lat_mean": jnp.asarray(pca.mean, jnp.float32)},
  }


def from_config(config: Mapping, **overrides) -> LatentLearner:
  """The LatentLearner of a model config ({num_heads, ndirs, style_dim, inject_index, n_latent}); inject_index
  and n_latent must come from the config or the overrides."""
  kw = {k: config[k] for k in ("num_heads", "ndirs", "style_dim", "inject_index", "n_latent") if k in config}
  kw.update(overrides)
  missing = [k for k in ("inject_index", "n_latent") if k not in kw]
  if missing:
    raise ValueError(
      f"latent learner config: {missing} are not stored in the ll state dict; pass them "
      "(upstream: --inject, default 5, and the generator's n_latent)"
    )
  return LatentLearner(**kw)


# -- k-means++ initialisation of K targets ----------------------------------------------------------------


class KMeansResult(NamedTuple):
  indices: np.ndarray  # (K,) chosen rows of the pool, in order of choice
  centroids: Array  # (K, D) = w[indices]
  probabilities: list  # K - 1 arrays (N,): the D^2 distribution each later centroid was drawn from


def kmeans_plusplus(
  w,
  render: Callable[[Array, Array], Array],
  distance: Callable[[Array, Array], Array],
  num_heads: int,
  *,
  key=None,
  draws: Sequence[int] | None = None,
  batch_size: int = 100,
) -> KMeansResult:
  """k-means++ seeding of the K cluster targets over a latent pool (upstream `kmeans_plusplus`).

  Points are compared as images: `render(w_batch (b, D), mean_w (1, D)) -> (b, ...)` draws the pose-only
  images G([w, mean_w], inject_index) (see `pose_renderer`); it is called once per pool batch in order,
  then once (b = 1) per new centroid, as upstream does. With random noise that re-render differs from the
  centroid's pool image, so a chosen point keeps a small non-zero probability and upstream can pick it
  again (duplicate heads; the fixtures show e.g. p = 0.003 and 0.03 for already chosen points). Kept for
  parity; a render with fixed noise gives it probability 0.
  `distance(centroid_images, pool_images) -> (b,)` (upstream: the perceptual loss). Pool images are kept
  on the host like upstream (N images: mind the memory, or render small images).

  Randomness: the first index is uniform over the pool, each next one is drawn with probability
  d^2 / sum d^2, d = distance to the nearest chosen centroid. With `key` these use jax.random; with
  `draws` = [first, second, ...] (K indices) the choices are replayed instead, e.g. torch's recorded ones.
  """
  if (key is None) == (draws is None):
    raise ValueError("kmeans_plusplus: pass exactly one of key (sample) or draws (replay)")
  if draws is not None and len(draws) != num_heads:
    raise ValueError(f"kmeans_plusplus: expected {num_heads} draws, got {len(draws)}")
  w = jnp.asarray(w)
  n = w.shape[0]
  mean_w = jnp.mean(w, axis=0, keepdims=True)
  batches = [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
  pool = [np.asarray(render(w[s], mean_w)) for s in batches]

  def choose(step, probs):
    nonlocal key
    if draws is not None:
      idx = int(draws[step])
      if not 0 <= idx < n or (probs is not None and not float(probs[idx]) > 0):
        raise ValueError(f"kmeans_plusplus: replayed draw {idx} at step {step} is impossible")
      return idx
    key, sub = jax.random.split(key)
    if probs is None:
      return int(jax.random.randint(sub, (), 0, n))
    return int(jax.random.choice(sub, n, p=probs))

  chosen, dists, probabilities = [choose(0, None)], [], []
  for step in range(1, num_heads):
    centroid_img = jnp.asarray(render(w[chosen[-1]][None], mean_w))
    d = [jnp.reshape(distance(jnp.broadcast_to(centroid_img, p.shape), jnp.asarray(p)), (-1,)) for p in pool]
    dists.append(jnp.concatenate(d))
    closest = jnp.min(jnp.stack(dists), axis=0)
    # D^2 weighting of Arthur & Vassilvitskii; upstream squares the (already squared-error) loss as well.
    sq = closest**2
    probs = sq / jnp.sum(sq)
    probabilities.append(np.asarray(probs))
    chosen.append(choose(step, probs))
  idx = np.asarray(chosen)
  return KMeansResult(idx, w[idx], probabilities)


def pose_renderer(generator: nn.Module, variables, inject_index: int, key=None, noise=None):
  """`render` for kmeans_plusplus: G([w, mean_w], input_is_latent, inject_index) (pose from w, appearance
  from the mean). Noise per call: fresh from `key` (upstream randomize_noise=True), else the next entry of
  the iterable `noise` (lists of (b, r, r, 1) maps, for replay), else the generator's fixed buffers."""
  noise_iter = iter(noise) if noise is not None else None
  calls, rows = [0], [0]

  @functools.partial(jax.jit, static_argnames="randomize")
  def apply(v, w, mean_w, noise_maps, rng, randomize):
    styles = [w, jnp.broadcast_to(mean_w, w.shape)]
    return generator.apply(
      v,
      styles,
      input_is_latent=True,
      inject_index=inject_index,
      noise=noise_maps,
      randomize_noise=randomize,
      rngs={"noise": rng},
    )

  def render(w, mean_w):
    rng = jax.random.fold_in(key, calls[0]) if key is not None else jax.random.PRNGKey(0)
    calls[0] += 1
    maps = None if noise_iter is None else [jnp.asarray(m) for m in next(noise_iter)]
    # G is per-sample, so smaller batches (centroids, the last pool batch) are zero-padded to the largest
    # batch seen: one compiled program instead of one per batch size.
    b = w.shape[0]
    rows[0] = max(rows[0], b)
    pad = lambda x: jnp.pad(x, [(0, rows[0] - b)] + [(0, 0)] * (x.ndim - 1))
    maps = None if maps is None else [pad(m) for m in maps]
    return apply(variables, pad(w), mean_w, maps, rng, key is not None and maps is None)[:b]

  return render
