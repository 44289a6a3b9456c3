"""A work directory as a run stopped after step N leaves it, made from an uninterrupted run's checkpoint of
step N: resuming it tests what resuming a killed run tests, without training those N steps a second time
(each trainer run traces its step and loads or compiles it again: ~40 s here for a tiny model)."""

import pathlib
import shutil


def stopped_after(full_workdir, step: int, workdir) -> pathlib.Path:
  """`workdir` holding only `full_workdir`'s step-`step` checkpoint (as the checkpoint manager wrote it)."""
  source = pathlib.Path(full_workdir) / "checkpoints" / str(step)
  assert (source / "commit_success.txt").exists(), f"{source}: the uninterrupted run kept no step-{step} checkpoint"
  workdir = pathlib.Path(workdir)
  shutil.copytree(source, workdir / "checkpoints" / str(step))
  return workdir
