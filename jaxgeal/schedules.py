"""Training schedules of GANgealing: psi annealing, SGDR with decaying restarts, EMA decay.

Implements upstream `utils/annealing.py` and how `train.py` drives it (Peebles et al., CVPR 2022, App. B;
wpeebles/gangealing at ffa6387):

  * psi, the truncation of the learned target latent, is annealed from 1 to 0 over the first `anneal_psi`
    iterations (cosine by default; linear and fast-slow exist upstream too) and stays 0 afterwards.
  * The STN / latent-learner learning rates stay at their base value while psi anneals, then follow
    `DecayingCosineAnnealingWarmRestarts`: SGDR (Loshchilov & Hutter) with cycle lengths
    T_0, T_0*T_mult, T_0*T_mult^2, ... epochs, whose peak is multiplied by `decay**n` in the n-th cycle.
    One epoch is `period` iterations counted from the end of annealing.
  * `lr_cycle_iters`: the iterations where a cycle ends (the LR is about to reach 0); train.py saves a
    checkpoint at each of them.
  * The EMA of the STN uses `0.5 ** (32 / 10000)` (rosinality's constant, independent of the batch).

Iteration conventions. Upstream counts iterations from 1: iteration `i` uses `psi(i)`, then steps the
optimisers with the current LR, then sets the LR for the next iteration to `sgdr((i - anneal_psi) / period)`.
An optax schedule is called with `count`, the number of updates already applied, so the update of iteration
`i` sees `count = i - 1` and must use the LR set after iteration `i - 1`:

    gangealing_lr_schedule(...)(count)  ==  upstream LR after iteration `count`
    psi_schedule(...)(count)            ==  psi_at(count + 1)    (psi of the iteration doing that update)

All schedules are pure jnp functions of a scalar or array step; they jit and work as optax schedules.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

Schedule = Callable[[jax.typing.ArrayLike], jax.Array]


def _float(x) -> jax.Array:
  return jnp.asarray(x, dtype=jnp.result_type(float))


# --------------------------------------------------------------------------------------------------------
# psi annealing. Same argument order as upstream: fn(i, maxval, minval, num_steps).


def cosine_anneal(i, maxval, minval, num_steps) -> jax.Array:
  """`minval + (maxval - minval) * (1 + cos(pi * i / num_steps)) / 2` (upstream's default)."""
  return minval + 0.5 * (maxval - minval) * (1 + jnp.cos(math.pi * _float(i) / num_steps))


def linear_anneal(i, maxval, minval, num_steps) -> jax.Array:
  """`maxval - i * (maxval - minval) / num_steps`."""
  return maxval - _float(i) * (maxval - minval) / num_steps


def fastslow_anneal(i, maxval, minval, num_steps, a: float = 0.3) -> jax.Array:
  """Fast decay from 1 then a slow approach to 0: `(n*a - a*i) / (n*a + i)`, n = num_steps.

  Small `a` (> 0) decays faster; large `a` is nearly linear. Upstream only allows maxval=1, minval=0; other
  values rescale the same curve.
  """
  i = _float(i)
  # a * (n - i) is upstream's n*a - a*i without float32 cancellation near the end.
  return minval + (maxval - minval) * (a * (num_steps - i)) / (num_steps * a + i)


ANNEAL_FNS: dict[str, Callable[..., jax.Array]] = {
  "cosine": cosine_anneal,
  "linear": linear_anneal,
  "fastslow": fastslow_anneal,
}


def psi_at(i, anneal_psi: int, anneal_fn: str = "cosine") -> jax.Array:
  """psi of upstream iteration `i` (1-based): `anneal_fn(i, 1, 0, anneal_psi)` for i <= anneal_psi, else 0."""
  fn = ANNEAL_FNS[anneal_fn]
  i = _float(i)
  # Clamp so that the unused branch stays finite (fast-slow turns negative past the end).
  value = fn(jnp.clip(i, 0, anneal_psi), 1.0, 0.0, max(anneal_psi, 1))
  return jnp.where(i > anneal_psi, 0.0, value)


def psi_schedule(anneal_psi: int, anneal_fn: str = "cosine") -> Schedule:
  """optax-style `count -> psi`: the psi of the iteration that performs update number `count` (0-based)."""
  if anneal_fn not in ANNEAL_FNS:
    raise ValueError(f"unknown anneal_fn {anneal_fn!r}; expected one of {sorted(ANNEAL_FNS)}")
  return lambda count: psi_at(_float(count) + 1, anneal_psi, anneal_fn)


# --------------------------------------------------------------------------------------------------------
# Learning rate: SGDR with decaying restarts.


def lr_cycle_iters(anneal_psi: int, period: int, iters: int, tm: int = 2) -> list[int]:
  """Upstream iterations (1-based) that end an LR cycle; train.py checkpoints there.

  The first entry, `anneal_psi - 1`, marks the end of psi annealing. Cycle n (0-based) then lasts
  `period * tm**n` iterations, and only cycles that end by `iters` count. (Upstream takes
  `int(math.log(x, tm))` cycles; that is exact for tm = 2 and may be one short for other tm. With tm = 1,
  where upstream's logarithm is undefined, every cycle of `period` iterations that ends by `iters` counts.)
  """
  if tm < 1:
    raise ValueError(f"expected an integer tm >= 1, got {tm!r}")
  out = [anneal_psi - 1]
  if tm == 1:
    while out[-1] + 1 + period <= iters:
      out.append(out[-1] + period)
  else:
    n = 0
    while period * tm ** (n + 1) <= iters - anneal_psi:  # Upstream's count: floor(log_tm((iters - a) / p)).
      out.append(out[-1] + period * tm**n)
      n += 1
  return [int(x) for x in out]


def _check_sgdr(t_0, t_mult):
  if not isinstance(t_0, int) or t_0 <= 0:
    raise ValueError(f"expected a positive integer T_0, got {t_0!r}")
  if not isinstance(t_mult, int) or t_mult < 1:
    raise ValueError(f"expected an integer T_mult >= 1, got {t_mult!r}")


def decaying_cosine_warm_restarts(
  base_lr: float, t_0: int = 1, t_mult: int = 2, decay: float = 0.9, eta_min: float = 0.0
) -> Schedule:
  """`epoch -> lr` of upstream `DecayingCosineAnnealingWarmRestarts.step(epoch)` (fractional epochs).

  With n restarts before `epoch`, T_cur the epochs since the last one and T_i the current cycle length:
  `lr = decay**n * (eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2)` (the decay also
  scales eta_min, as upstream). Epoch 0 (also the value right after construction) gives base_lr.
  """
  _check_sgdr(t_0, t_mult)

  def schedule(epoch):
    epoch = _float(epoch)
    if t_mult == 1:
      n = jnp.floor(epoch / t_0).astype(jnp.int32)
      start, t_i = n.astype(epoch.dtype) * t_0, t_0
    else:
      # n = floor(log_{T_mult}(epoch / T_0 * (T_mult - 1) + 1)); cycle n starts at T_0 (T_mult^n - 1)/(T_mult - 1).
      # The float log can land on the wrong side of a restart, so n is corrected with exact integer
      # cycle boundaries (upstream's float64 math.log is exact there for T_mult = 2).
      x = epoch / t_0 * (t_mult - 1) + 1
      n = jnp.floor(jnp.log(x) / math.log(t_mult)).astype(jnp.int32)
      n = jnp.maximum(n, 0)
      begin = lambda k: (t_0 * (jnp.power(t_mult, k) - 1) // (t_mult - 1)).astype(epoch.dtype)
      n = jnp.where(epoch < begin(n), n - 1, n)
      n = jnp.where(epoch >= begin(n + 1), n + 1, n)
      start, t_i = begin(n), (t_0 * jnp.power(t_mult, n)).astype(epoch.dtype)
    t_cur = epoch - start
    peak = jnp.power(jnp.asarray(decay, epoch.dtype), n.astype(epoch.dtype))
    return peak * (eta_min + (base_lr - eta_min) * (1 + jnp.cos(math.pi * t_cur / t_i)) / 2)

  return schedule


def gangealing_lr_schedule(
  base_lr: float,
  anneal_psi: int,
  period: float,
  t_mult: int = 2,
  decay: float = 0.9,
  t_0: int = 1,
  eta_min: float = 0.0,
) -> Schedule:
  """optax schedule `count -> lr` of train.py: base_lr during psi annealing, then SGDR.

  `count` updates done = upstream iteration `count` finished; the LR for the next update is
  `sgdr(max(0, (count - anneal_psi) / period))`, which is base_lr up to and including
  `count = anneal_psi`. Defaults are train.py's (`--tm 2 --decay 0.9`, T_0 = 1 epoch); the cluster
  classifier uses anneal_psi = 0.
  """
  if period <= 0:
    raise ValueError(f"expected a positive period, got {period!r}")
  sgdr = decaying_cosine_warm_restarts(base_lr, t_0=t_0, t_mult=t_mult, decay=decay, eta_min=eta_min)
  return lambda count: sgdr(jnp.maximum(0.0, (_float(count) - anneal_psi) / period))


# --------------------------------------------------------------------------------------------------------
# EMA.


def ema_decay(batch_size: int = 32, half_life_images: int = 10_000) -> float:
  """EMA factor of `accumulate(t_ema, t, accum)`: `0.5 ** (32 / 10000)` ~= 0.99778 with the defaults.

  The EMA forgets half of its value after `half_life_images / batch_size` updates. Upstream (train.py,
  as rosinality's) hard-codes 32 regardless of the actual batch, so keep the default to match it.
  """
  return 0.5 ** (batch_size / half_life_images)


EMA_DECAY = ema_decay()
