"""Specification of `jaxgeal.schedules`: GANgealing's psi annealing, decaying SGDR and EMA constant.

The parity test replays every call recorded in each `schedules` fixture (upstream `utils/annealing.py` run
as train.py runs it); every hyperparameter comes from the fixture's json, or, where the json only states it
inside the recorded call (T_0, the epoch step, fast-slow's `a`), is parsed from that call's text.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgeal import schedules
from tests import fixtures

REL = 1e-6  # Max abs error relative to the largest expected magnitude (references are float64 -> float32).


def _kwarg(text: str, name: str) -> float:
  match = re.search(rf"\b{re.escape(name)}=([-+0-9.eE]+)", text)
  assert match, f"the recorded call no longer states {name}=...: {text!r}"
  return float(match.group(1))


def _call_text(fx, output: str) -> str:
  call = fx.call(output)
  return " ".join([call["call"], call.get("note", ""), fx.meta["arrays"][output].get("meaning", "")])


@pytest.mark.parity
@pytest.mark.parametrize("fx", fixtures.collect("schedules"))
def test_psi_annealing_matches_upstream(fx):
  hp = fx.meta["hyperparameters"]
  recorded = [n for n in fx.arrays if n.startswith("psi_") and n != "psi_iters"]
  assert recorded, "no psi outputs recorded"
  i = fx["psi_iters"]
  for name in recorded:
    fn_name = name[len("psi_") :]
    assert fn_name in schedules.ANNEAL_FNS, f"fixture records {name}, which jaxgeal does not implement"
    kwargs = {"a": _kwarg(_call_text(fx, name), "a")} if fn_name == "fastslow" else {}
    got = schedules.ANNEAL_FNS[fn_name](i, 1.0, 0.0, hp["anneal_psi"], **kwargs)
    fixtures.assert_close(got, fx[name], REL * np.abs(fx[name]).max(), name)
    # train.py's psi for iteration i is the same value while annealing.
    fixtures.assert_close(
      schedules.psi_at(i, hp["anneal_psi"], fn_name), fx[name], REL * np.abs(fx[name]).max(), f"psi_at/{fn_name}"
    )


@pytest.mark.parity
@pytest.mark.parametrize("fx", fixtures.collect("schedules"))
def test_zero_lr_iterations_match_upstream(fx):
  hp = fx.meta["hyperparameters"]
  got = schedules.lr_cycle_iters(hp["anneal_psi"], hp["period"], hp["iters"], hp["tm"])
  np.testing.assert_array_equal(got, fx["zero_lr_iters"])


@pytest.mark.parity
@pytest.mark.parametrize("fx", fixtures.collect("schedules"))
def test_training_learning_rates_match_upstream_for_every_base_rate(fx):
  hp = fx.meta["hyperparameters"]
  t_0 = int(_kwarg(_call_text(fx, "lr_train"), "T_0"))
  expected = fx["lr_train"]
  assert expected.shape == (len(hp["base_lrs"]), len(fx["lr_iters"]))
  for base_lr, want in zip(hp["base_lrs"], expected):
    schedule = schedules.gangealing_lr_schedule(
      base_lr, hp["anneal_psi"], hp["period"], t_mult=hp["tm"], decay=hp["decay"], t_0=t_0
    )
    # The LR set after upstream iteration i is what optax's update number `count = i` uses.
    got = jax.jit(schedule)(fx["lr_iters"])
    fixtures.assert_close(got, want, REL * np.abs(want).max(), f"lr_train base_lr={base_lr}")


@pytest.mark.parity
@pytest.mark.parametrize("fx", fixtures.collect("schedules"))
def test_integer_and_half_epochs_match_upstream(fx):
  hp = fx.meta["hyperparameters"]
  names = [n for n in fx.arrays if n.startswith("lr_epochs_")]
  assert names
  for name in names:
    text = _call_text(fx, name)
    step = re.search(r"step\(([0-9.]+) \* e\) for e in range\((\d+)\)", text)
    assert step, f"unexpected call text for {name}: {text!r}"
    epochs = float(step.group(1)) * np.arange(int(step.group(2)))
    sgdr = schedules.decaying_cosine_warm_restarts(
      _kwarg(text, "lr"), t_0=int(_kwarg(text, "T_0")), t_mult=int(_kwarg(text, "T_mult")), decay=_kwarg(text, "decay")
    )
    # Entry 0 is the LR right after construction (= epoch 0), then one entry per step(epoch).
    got = np.concatenate([np.atleast_1d(sgdr(0.0)), np.asarray(sgdr(epochs))])
    assert len(epochs) == hp["plain_steps"]
    fixtures.assert_close(got, fx[name], REL * np.abs(fx[name]).max(), name)


@pytest.mark.parity
@pytest.mark.parametrize("fx", fixtures.collect("schedules"))
def test_ema_decay_matches_upstream(fx):
  # Stored as float32: compare at float32 resolution.
  fixtures.assert_close(schedules.EMA_DECAY, fx["ema_accum"], 1e-7, "ema_accum")
  assert schedules.ema_decay() == 0.5 ** (32 / 10000)


# --------------------------------------------------------------------------------------------------------
# Properties, with train.py's defaults (anneal_psi 150k, period 37.5k, tm 2, decay 0.9).

ANNEAL, PERIOD, BASE = 150_000, 37_500, 1e-3


def _restart_counts(n_restarts: int, t_0: int, t_mult: int, period: int, anneal: int) -> list[int]:
  """Update counts at which restart k = 1..n begins: anneal + period * T_0 (T_mult^k - 1)/(T_mult - 1)."""
  if t_mult == 1:
    return [anneal + period * t_0 * k for k in range(1, n_restarts + 1)]
  return [anneal + period * t_0 * (t_mult**k - 1) // (t_mult - 1) for k in range(1, n_restarts + 1)]


def test_jitted_schedules_equal_the_eager_ones():
  counts = np.concatenate([np.arange(0, 2000, 7), np.arange(ANNEAL - 50, 1_500_000, 4999)])
  for schedule in (
    schedules.gangealing_lr_schedule(BASE, ANNEAL, PERIOD),
    schedules.psi_schedule(ANNEAL, "cosine"),
    schedules.psi_schedule(ANNEAL, "fastslow"),
  ):
    # XLA may fuse the jitted arithmetic differently: equal up to float32 rounding (REL of the peak).
    eager = np.array([float(schedule(int(c))) for c in counts[::25]])
    fixtures.assert_close(jax.jit(schedule)(counts[::25]), eager, REL * eager.max(), "jit vs python ints")
    eager = np.asarray(schedule(counts))
    fixtures.assert_close(jax.jit(schedule)(jnp.asarray(counts)), eager, REL * eager.max(), "jit vs eager")


def test_lr_is_constant_while_psi_anneals():
  lr = schedules.gangealing_lr_schedule(BASE, ANNEAL, PERIOD)(np.arange(ANNEAL + 1))
  np.testing.assert_array_equal(np.asarray(lr), np.float32(BASE))


@pytest.mark.parametrize("t_0,t_mult,decay", [(1, 2, 0.9), (3, 2, 0.5), (1, 3, 0.8), (2, 1, 0.9)])
def test_lr_nearly_vanishes_before_each_restart_and_peaks_at_base_times_decay_power_after(t_0, t_mult, decay):
  schedule = schedules.gangealing_lr_schedule(BASE, ANNEAL, PERIOD, t_mult=t_mult, decay=decay, t_0=t_0)
  for k, count in enumerate(_restart_counts(5, t_0, t_mult, PERIOD, ANNEAL), start=1):
    before, after = float(schedule(count - 1)), float(schedule(count))
    assert 0 <= before < 1e-6 * BASE, f"restart {k}: lr {before} one update before the restart"
    np.testing.assert_allclose(after, BASE * decay**k, rtol=1e-6, err_msg=f"restart {k}")


def test_lr_cycle_iters_mark_the_last_update_of_each_cycle():
  schedule = schedules.gangealing_lr_schedule(BASE, ANNEAL, PERIOD)
  zero = schedules.lr_cycle_iters(ANNEAL, PERIOD, 1_500_000, 2)
  assert zero == [149_999, 187_499, 262_499, 412_499, 712_499, 1_312_499]  # docs/upstream.md §1.4
  for k, i in enumerate(zero[1:], start=1):
    assert float(schedule(i)) < 1e-6 * BASE  # The LR set after iteration i is a cycle's minimum...
    np.testing.assert_allclose(float(schedule(i + 1)), BASE * 0.9**k, rtol=1e-6)  # ...then it restarts.


def test_lr_cycle_iters_with_equal_cycles():
  # t_mult = 1 (SGDR restarts every period; upstream's log base tm is undefined there): terminates, and each
  # entry is a cycle's zero-LR iteration.
  schedule = schedules.gangealing_lr_schedule(BASE, 1000, 5000, t_mult=1, decay=1.0)
  zero = schedules.lr_cycle_iters(1000, 5000, 12_000, 1)
  assert zero == [999, 5999, 10_999]
  for i in zero[1:]:
    assert float(schedule(i)) < 1e-6 * BASE
    np.testing.assert_allclose(float(schedule(i + 1)), BASE, rtol=1e-6)
  with pytest.raises(ValueError, match="tm >= 1"):
    schedules.lr_cycle_iters(1000, 5000, 12_000, 0)


def test_lr_stays_within_zero_and_base():
  lr = np.asarray(schedules.gangealing_lr_schedule(BASE, ANNEAL, PERIOD)(np.arange(0, 3_000_000, 97)))
  assert lr.min() >= 0 and lr.max() <= np.float32(BASE)


def test_lr_schedule_drives_an_optax_optimizer():
  anneal, period = 5, 4
  schedule = schedules.gangealing_lr_schedule(0.1, anneal, period)
  opt = optax.sgd(learning_rate=schedule)  # Update = -lr(count) * gradient, count = updates so far.
  params = jnp.zeros(())
  update = jax.jit(lambda state: opt.update(jnp.ones(()), state, params))
  state, lrs = opt.init(params), []
  for _ in range(30):
    updates, state = update(state)
    lrs.append(-float(updates))
  np.testing.assert_allclose(lrs, np.asarray(schedule(np.arange(30))), rtol=1e-6)


@pytest.mark.parametrize("fn", sorted(schedules.ANNEAL_FNS))
def test_psi_goes_monotonically_from_one_to_zero_and_stays_there(fn):
  anneal = 1000
  psi = np.asarray(schedules.psi_at(np.arange(0, anneal + 500), anneal, fn))
  assert psi[0] == 1.0 and abs(psi[anneal]) < 1e-6 and np.all(psi[anneal + 1 :] == 0)
  assert np.all(np.diff(psi) <= 0), "psi must never increase"
  assert np.all(psi[:anneal] > 0)


def test_psi_schedule_counts_updates_from_zero():
  schedule = schedules.psi_schedule(20, "cosine")
  counts = np.arange(40)
  np.testing.assert_array_equal(np.asarray(schedule(counts)), np.asarray(schedules.psi_at(counts + 1, 20)))


def test_invalid_schedule_arguments_are_rejected():
  with pytest.raises(ValueError, match="T_0"):
    schedules.decaying_cosine_warm_restarts(1e-3, t_0=0)
  with pytest.raises(ValueError, match="T_mult"):
    schedules.decaying_cosine_warm_restarts(1e-3, t_mult=1.5)
  with pytest.raises(ValueError, match="anneal_fn"):
    schedules.psi_schedule(10, "exponential")
