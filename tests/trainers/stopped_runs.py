"""A work directory as a run killed after step N's checkpoint leaves it, made from an uninterrupted run's: its
step-N checkpoint, its recorded config, and all of its metrics rows (a killed run may have logged steps past its
last checkpoint; the resumed run drops those). Resuming it tests what resuming a killed run tests, without
training those N steps a second time (each trainer run traces its step and loads or compiles it again: ~40 s
here for a tiny model)."""

import pathlib
import shutil

from jaxgeal import metric_writers
from jaxgeal.trainers import resume


def stopped_after(full_workdir, step: int, workdir) -> pathlib.Path:
  """`workdir` holding `full_workdir`'s step-`step` checkpoint (as the checkpoint manager wrote it), config.json
  and metrics.jsonl."""
  full_workdir, workdir = pathlib.Path(full_workdir), pathlib.Path(workdir)
  source = full_workdir / "checkpoints" / str(step)
  assert (source / "commit_success.txt").exists(), f"{source}: the uninterrupted run kept no step-{step} checkpoint"
  shutil.copytree(source, workdir / "checkpoints" / str(step))
  for name in (resume.CONFIG_FILE, metric_writers.METRICS_FILE):
    shutil.copy(full_workdir / name, workdir / name)
  return workdir
