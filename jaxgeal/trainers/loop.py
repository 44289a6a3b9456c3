"""The training loop shared by the trainers: progress bar, periodic metrics / visuals / checkpoints, and the
non-finite guard.

Every `log_every` steps one INFO line carries the step / total, the speed, the time left and the metrics, so
that a log file (no terminal bar) says how far along the run is. `log_parameters` logs clu's parameter table
once at the start (log file only) and its total (console).

Trainers provide a jitted `step(state) -> (state, metrics)`; the loop only touches device values every
`log_every` steps (one host sync), so steps are dispatched asynchronously in between. Checkpoints are written
with Orbax at `ckpt_every`, at any extra steps the trainer names (GANgealing's zero-learning-rate steps) and
at the end; a run restarted with the same workdir resumes from the latest one.

In a multi-process run every process runs the loop (each step, visual and checkpoint is a collective); only
process 0 shows the progress bar, and only its writer writes (metric_writers.create_default_writer).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from clu import parameter_overview
from tqdm import tqdm

from jaxgeal.metric_writers import BaseWriter
from jaxgeal.trainers import resume


def apply_gradients(tx: optax.GradientTransformation, grads, opt_state, params):
  """One optimizer step: `tx.update` then `optax.apply_updates`; returns (new params, new optimizer state)."""
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def when(flag, update: Callable, skip: Callable, *operands):
  """`update(*operands)` where `flag` holds, else `skip(*operands)` (same output structure): a lazy regulariser's
  extra update (StyleGAN2 §3.2). A Python bool (a static argument) chooses while tracing, so the program holds
  one variant, as the benchmarks time and count it; a traced boolean becomes `lax.cond`, so one program serves
  every step and the training loop compiles once instead of once per variant."""
  if isinstance(flag, bool | np.bool_):
    return (update if flag else skip)(*operands)
  return jax.lax.cond(flag, update, skip, *operands)


def restore_or_init(
  manager: ocp.CheckpointManager,
  init_fn: Callable[[], Any],
  abstract_fn: Callable[[], Any],
  shardings: Callable[[Any], Any] | None = None,
  config: ml_collections.ConfigDict | None = None,
) -> Any:
  """The latest checkpoint restored into the structure of `abstract_fn()`, or `init_fn()` for a new run.

  `shardings(abstract tree) -> tree of shardings` restores each array straight onto the target mesh's layout,
  whatever mesh wrote the checkpoint (Orbax reads the slices each device needs). With `config`, the run's config
  is recorded in the work directory, and a checkpoint of another model is refused (resume.ResumeError names
  the array that differs) before anything is read."""
  workdir = manager.directory.parent
  latest = manager.latest_step()
  if latest is None:
    state = init_fn()
  else:
    abstract = jax.eval_shape(abstract_fn)
    if config is not None:
      diff = resume.changes(workdir, config)
      resume.check_checkpoint(manager, latest, abstract, diff)
      if diff:
        logging.warning("resuming with config changes: %s", resume.describe(diff, limit=len(diff)))
    if shardings is not None:
      abstract = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings(abstract)
      )
    state = manager.restore(latest, args=ocp.args.StandardRestore(abstract))
    logging.info("resumed from %s at step %d", manager.directory, latest)
  if config is not None:
    resume.record(workdir, config)
  return state


def log_parameters(name: str, params: Any):
  """clu's table of parameter names, shapes and sizes to the log file, and their total on the console."""
  # Shapes only: under FSDP over several processes a parameter is not all in this process, so its values
  # cannot be fetched here (and the table needs none).
  shapes = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
  table = parameter_overview.get_parameter_overview(shapes, include_stats=False)
  logging.info("%s parameters:\n%s", name, table, extra={"console": False})
  logging.info("%s: %s parameters", name, f"{parameter_overview.count_parameters(params):,}")


def _format_seconds(seconds: float) -> str:
  seconds = int(round(seconds))
  h, rest = divmod(seconds, 3600)
  return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


class Progress:
  """Speed and time left at the logging steps. `progress(step)`, called after a logged step (its values fetched,
  so the step has run), sets `steps_per_sec` over the interval since the previous call and `note`, e.g.
  "step 400/1000 (40%), 12.3 steps/s, ETA 0m49s". The ETA uses the speed since the first logged step: the first
  interval holds the compilation, and single intervals hold checkpoints and visuals. (clu's
  periodic_actions.ReportProgress computes the same, but clu 0.0.12 imports TensorFlow with it.)"""

  def __init__(self, start_step: int, total_steps: int):
    self.total_steps = total_steps
    self._last = (start_step, time.monotonic())
    self._first = None
    self.steps_per_sec = float("nan")
    self.note = ""

  def __call__(self, step: int):
    now = time.monotonic()
    self.steps_per_sec = (step - self._last[0]) / max(now - self._last[1], 1e-9)
    self._last = (step, now)
    if self._first is None or step == self._first[0]:
      self._first, rate = (step, now), self.steps_per_sec
    else:
      rate = (step - self._first[0]) / max(now - self._first[1], 1e-9)
    eta = _format_seconds((self.total_steps - step) / rate) if rate > 0 else "?"
    self.note = (
      f"step {step}/{self.total_steps} ({100 * step / self.total_steps:.0f}%), "
      f"{self.steps_per_sec:.3g} steps/s, ETA {eta}"
    )


def run(
  *,
  name: str,
  state: Any,
  step_fn: Callable[[Any, int], tuple[Any, dict]],
  start_step: int,
  total_steps: int,
  manager: ocp.CheckpointManager,
  writer: BaseWriter,
  log_every: int,
  ckpt_every: int,
  vis_every: int = 0,
  visualize: Callable[[Any], dict] | None = None,
  extra_ckpt_steps: Iterable[int] = (),
  save_state: Callable[[Any], Any] = lambda s: s,
) -> Any:
  """Run `step_fn(state, step)` from start_step to total_steps; returns the final state."""
  extra = set(extra_ckpt_steps)
  step = start_step
  progress = Progress(start_step, total_steps)
  disable = None if jax.process_index() == 0 else True  # None: no bar without a terminal
  with tqdm(total=total_steps, initial=step, desc=name, dynamic_ncols=True, disable=disable) as bar:
    while step < total_steps:
      state, metrics = step_fn(state, step)
      step += 1
      bar.update(1)
      last = step == total_steps
      if step % log_every == 0 or last:
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}  # waits for the step: timed below
        progress(step)
        bad = {k: v for k, v in metrics.items() if not np.isfinite(v)}
        if bad:
          raise FloatingPointError(
            f"{name}: non-finite values at step {step}: {bad}. The latest checkpoint in "
            f"{manager.directory} (step {manager.latest_step()}) is intact; lower the "
            f"learning rate or check the inputs, then rerun to resume from it."
          )
        metrics["steps_per_s"] = progress.steps_per_sec
        writer.write_scalars(step, metrics)
        logging.info(
          "%s %s | %s", name, progress.note, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "steps_per_s")
        )
        bar.set_postfix({k: f"{v:.4g}" for k, v in list(metrics.items())[:3]})
      if visualize is not None and vis_every and (step % vis_every == 0 or last):
        writer.write_images(step, visualize(state))
      if step % ckpt_every == 0 or step in extra or last:
        manager.save(step, args=ocp.args.StandardSave(save_state(state)))
  manager.wait_until_finished()
  return state
