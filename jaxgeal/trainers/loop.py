"""The training loop shared by the trainers: progress bar, periodic metrics / visuals / checkpoints, and the
non-finite guard.

Trainers provide a jitted `step(state) -> (state, metrics)`; the loop only touches device values every
`log_every` steps (one host sync), so steps are dispatched asynchronously in between. Checkpoints are written
with Orbax at `ckpt_every`, at any extra steps the trainer names (GANgealing's zero-learning-rate steps) and
at the end; a run restarted with the same workdir resumes from the latest one.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable

import jax
import numpy as np
import orbax.checkpoint as ocp
from tqdm import tqdm

from jaxgeal.metric_writers import MetricWriter


def restore_or_init(manager: ocp.CheckpointManager, init_fn: Callable[[], Any],
                    abstract_fn: Callable[[], Any]) -> Any:
  """The latest checkpoint restored into the structure of `abstract_fn()`, or `init_fn()` for a new run."""
  latest = manager.latest_step()
  if latest is None:
    return init_fn()
  abstract = jax.eval_shape(abstract_fn)
  state = manager.restore(latest, args=ocp.args.StandardRestore(abstract))
  logging.info("resumed from %s at step %d", manager.directory, latest)
  return state


def run(*, name: str, state: Any, step_fn: Callable[[Any, int], tuple[Any, dict]], start_step: int,
        total_steps: int, manager: ocp.CheckpointManager, writer: MetricWriter, log_every: int,
        ckpt_every: int, vis_every: int = 0, visualize: Callable[[Any], dict] | None = None,
        extra_ckpt_steps: Iterable[int] = (), save_state: Callable[[Any], Any] = lambda s: s) -> Any:
  """Run `step_fn(state, step)` from start_step to total_steps; returns the final state."""
  extra = set(extra_ckpt_steps)
  step = start_step
  t0, t_steps = time.perf_counter(), 0
  with tqdm(total=total_steps, initial=step, desc=name, dynamic_ncols=True, disable=None) as bar:
    while step < total_steps:
      state, metrics = step_fn(state, step)
      step += 1
      t_steps += 1
      bar.update(1)
      last = step == total_steps
      if step % log_every == 0 or last:
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        bad = {k: v for k, v in metrics.items() if not np.isfinite(v)}
        if bad:
          raise FloatingPointError(f"{name}: non-finite values at step {step}: {bad}. The latest checkpoint in "
                                   f"{manager.directory} (step {manager.latest_step()}) is intact; lower the "
                                   f"learning rate or check the inputs, then rerun to resume from it.")
        metrics["steps_per_s"] = t_steps / max(time.perf_counter() - t0, 1e-9)
        t0, t_steps = time.perf_counter(), 0
        writer.write_scalars(step, metrics)
        bar.set_postfix({k: f"{v:.4g}" for k, v in list(metrics.items())[:3]})
      if visualize is not None and vis_every and (step % vis_every == 0 or last):
        writer.write_images(step, visualize(state))
      if step % ckpt_every == 0 or step in extra or last:
        manager.save(step, args=ocp.args.StandardSave(save_state(state)))
  manager.wait_until_finished()
  return state
