"""What a work directory's run was configured with, and whether a rerun with another config can continue it.

Every trainer records its config in `<workdir>/config.json` when it starts or resumes (process 0 writes it).
A rerun in the same work directory resumes from the latest checkpoint. Before restoring, `check_checkpoint`
compares the checkpoint's arrays with what this config builds: a config of another model (other widths, depth
or code sizes) fails in one line naming the first array that differs and the config changes behind it,
instead of Orbax's shape error from deep inside the restore. Changes that leave the model's shapes alone
(train longer, log or checkpoint more often, another mesh, a lower learning rate after a divergence) are the
user's to make: the run resumes and they are logged as one warning, so the log says what the rest of the run
was trained with.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from jaxgeal import distributed, storage

CONFIG_FILE = "config.json"


class ResumeError(ValueError):
  """The work directory holds a checkpoint of a model this config does not build."""


def flat(config: ml_collections.ConfigDict | dict) -> dict[str, Any]:
  """The config as {dotted key: value as JSON reads it back} (tuples become lists, objects their repr)."""
  tree = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
  out = {}

  def walk(node, prefix):
    for key, value in node.items():
      if isinstance(value, dict):
        walk(value, f"{prefix}{key}.")
      else:
        out[f"{prefix}{key}"] = json.loads(json.dumps(value, default=repr))

  walk(tree, "")
  return out


def recorded(workdir: str | os.PathLike) -> dict[str, Any] | None:
  """The flat config recorded in the work directory, or None where there is none (or it is unreadable)."""
  path = storage.as_path(workdir) / CONFIG_FILE
  if not path.exists():
    return None
  try:
    return flat(json.loads(path.read_text()))
  except (ValueError, AttributeError):  # A torn or hand-edited file: it records nothing usable.
    logging.warning("%s is not a config record; it will be rewritten", path)
    return None


def changes(workdir: str | os.PathLike, config) -> list[tuple[str, Any, Any]] | None:
  """(key, recorded value, value now) for each key whose value differs from the recorded config, sorted by
  key (a key only one side has reads as None on the other); None where no config was recorded."""
  before = recorded(workdir)
  if before is None:
    return None
  now = flat(config)
  return [(k, before.get(k), now.get(k)) for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]


def describe(diff: list[tuple[str, Any, Any]], limit: int = 6) -> str:
  """'model.channel_multiplier 2 -> 1, total_steps 10 -> 20' (the first `limit` changes, then how many more)."""
  text = ", ".join(f"{key} {json.dumps(old)} -> {json.dumps(new)}" for key, old, new in diff[:limit])
  return text + (f" and {len(diff) - limit} more" if len(diff) > limit else "")


def record(workdir: str | os.PathLike, config):
  """Write the config to `<workdir>/config.json` (process 0; the others wait for it)."""
  if distributed.is_primary():
    tree = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
    (storage.as_path(workdir) / CONFIG_FILE).write_text(json.dumps(tree, indent=2, default=repr) + "\n")
  distributed.barrier("jaxgeal.resume.record")


def _path(keys) -> str:
  names = []
  for key in keys:
    for attr in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey
      if hasattr(key, attr):
        names.append(str(getattr(key, attr)))
        break
    else:
      names.append(str(key))
  return "/".join(names)


def _shapes(tree) -> dict[str, tuple[int, ...]]:
  leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))
  return {_path(keys): tuple(leaf.shape) for keys, leaf in leaves if hasattr(leaf, "shape")}


def check_checkpoint(
  manager: ocp.CheckpointManager, step: int, abstract: Any, diff: list[tuple[str, Any, Any]] | None
) -> None:
  """ResumeError unless the checkpoint at `step` holds an array of the same shape for each array of
  `abstract` (the state this config builds) and nothing else; the message names the first array that
  differs and the config changes since the checkpoint's run started (`diff`, from `changes`)."""
  stored = _shapes(manager.item_metadata(step))
  built = _shapes(abstract)
  first = None
  for name in sorted(set(stored) | set(built)):
    if stored.get(name) != built.get(name):
      first = name
      break
  if first is None:
    return
  if first not in built:
    what = f"the checkpoint holds {first} {stored[first]}, which this config does not build"
  elif first not in stored:
    what = f"this config builds {first} {built[first]}, which the checkpoint does not hold"
  else:
    what = f"{first} is {stored[first]} in the checkpoint and {built[first]} with this config"
  workdir = manager.directory.parent
  if diff:
    since = f"config changes since that run started: {describe(diff)}"
  elif diff is None:
    since = "the run recorded no config"
  else:
    since = f"the config equals {workdir / CONFIG_FILE}"
  raise ResumeError(
    f"{workdir} holds a checkpoint (step {step}) of another model: {what} ({since}). Rerun with the config that "
    f"run was started with, or give a new --workdir."
  )


def finished(workdir: str | os.PathLike, config) -> bool:
  """True where `<workdir>/model` was exported by a run of this config (or of one that recorded none), so a
  pipeline may skip the stage; False sends it to the trainer, which resumes (train longer) or refuses (a config
  of another model)."""
  if not (storage.as_path(workdir) / "model" / "model.json").exists():
    return False
  diff = changes(workdir, config)
  if diff:
    logging.info("%s: config changed since its model was exported (%s); resuming", workdir, describe(diff))
  return not diff
