"""Saving and loading models and training state with Orbax.

A *model directory* (what `python -m jaxgeal.convert` writes and `jaxgeal.sample` reads) holds:
  model.json   {"format": "jaxgeal-models", "version": 1, "models": {name: {"kind", "config"}}, "source"}
  variables/   one Orbax PyTree checkpoint {name: {"params": ..., <collections>...}}
so the architecture travels with the weights and a model can be rebuilt without its original checkpoint.
Model directories and work directories may be local or in a bucket (gs://...; jaxgeal.storage).

Training runs use `training_manager` (an Orbax CheckpointManager) so that a killed run resumes exactly.

Multi-process runs: every process calls `save_models` and the manager's save / restore with the same values
(Orbax coordinates them; the work directory must be one directory all processes see), and only process 0
writes model.json.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from jaxgeal import distributed, sharding, storage

FORMAT = "jaxgeal-models"
VERSION = 1


class ModelNotFoundError(FileNotFoundError):
  """A model directory is missing or incomplete."""


def _to_jsonable(x):
  if isinstance(x, Mapping):
    return {str(k): _to_jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_to_jsonable(v) for v in x]
  if isinstance(x, np.generic):
    return x.item()
  return x


def save_models(
  out_dir: str | os.PathLike,
  models: Mapping[str, tuple[str, Mapping, Any]],
  source: str | None = None,
  overwrite: bool = False,
) -> epath.Path:
  """Write {name: (kind, config, variables)} as a model directory (a local folder or a bucket path)."""
  out = storage.as_path(out_dir)
  if (out / "model.json").exists() and not overwrite:
    raise FileExistsError(f"{out} already holds a model (model.json); pass overwrite=True (CLI: --overwrite)")
  out.mkdir(parents=True, exist_ok=True)
  tree = {name: sharding.to_host(variables) for name, (_, _, variables) in models.items()}
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(out / "variables", tree, force=True)
  ckptr.wait_until_finished()
  meta = {
    "format": FORMAT,
    "version": VERSION,
    "source": source,
    "models": {name: {"kind": kind, "config": _to_jsonable(config)} for name, (kind, config, _) in models.items()},
  }
  if jax.process_index() == 0:
    (out / "model.json").write_text(json.dumps(meta, indent=2))
  distributed.barrier("jaxgeal.checkpoint.save_models")  # model.json exists for every process on return
  return out


def read_model_index(model_dir: str | os.PathLike) -> dict:
  """model.json of a model directory, checked; ModelNotFoundError names the file and what is wrong with it."""
  path = epath.Path(model_dir)  # Not made absolute: errors name the path as the user gave it.
  meta_path = path / "model.json"
  if not meta_path.exists():
    raise ModelNotFoundError(
      f"{path} is not a jaxgeal model directory (no model.json). Convert a PyTorch checkpoint first: "
      f"python -m jaxgeal.convert stylegan2 CHECKPOINT.pt {path}"
    )
  try:
    meta = json.loads(meta_path.read_text())
  except UnicodeDecodeError:
    raise ModelNotFoundError(f"{meta_path} is not a text file; convert the model again") from None
  except json.JSONDecodeError as e:
    raise ModelNotFoundError(
      f"{meta_path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); convert the model again"
    ) from None
  if not isinstance(meta, dict) or meta.get("format") != FORMAT:
    got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
    raise ModelNotFoundError(f"{meta_path} is not a {FORMAT} index (format={got!r})")
  if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
    raise ModelNotFoundError(
      f"{meta_path} has version {meta.get('version')!r}; this jaxgeal reads versions up to {VERSION}"
    )
  models = meta.get("models")
  if not isinstance(models, dict) or not models:
    raise ModelNotFoundError(
      f"{meta_path}: 'models' must map model names to {{'kind', 'config'}} entries (got {models!r:.60})"
    )
  for name, entry in models.items():
    if (
      not isinstance(entry, dict) or not isinstance(entry.get("kind"), str) or not isinstance(entry.get("config"), dict)
    ):
      raise ModelNotFoundError(
        f"{meta_path}: models[{name!r}] must be {{'kind': str, 'config': {{...}}}} (got {entry!r:.60})"
      )
  return meta


def load_models(model_dir: str | os.PathLike) -> dict[str, tuple[str, dict, Any]]:
  """Read a model directory: {name: (kind, config, variables)} with numpy leaves."""
  path = storage.as_path(model_dir)
  meta = read_model_index(path)
  if not (path / "variables").exists():
    raise ModelNotFoundError(f"{path}/variables is missing: the conversion did not finish; convert again")
  tree = ocp.StandardCheckpointer().restore(path / "variables")
  out = {}
  for name, entry in meta["models"].items():
    if name not in tree:
      raise ModelNotFoundError(f"{path}: model.json lists {name!r} but variables/ does not hold it")
    out[name] = (entry["kind"], entry["config"], tree[name])
  return out


def load_model(model_dir: str | os.PathLike, name: str | None = None, kind: str | None = None) -> tuple[str, dict, Any]:
  """One model from a directory: by name, else the first of the given kind (e.g. 'generator' -> g_ema)."""
  models = load_models(model_dir)
  if name is not None:
    if name not in models:
      raise KeyError(f"{model_dir} holds {sorted(models)}, not {name!r}")
    return models[name]
  for m in models.values():
    if kind is None or m[0] == kind:
      return m
  raise KeyError(f"{model_dir} holds no model of kind {kind!r} (it has {sorted(models)})")


def training_manager(
  workdir: str | os.PathLike, max_to_keep: int = 3, save_interval_steps: int = 1
) -> ocp.CheckpointManager:
  """CheckpointManager over `workdir/checkpoints` for trainer state (params, EMA, optimizer, step, RNG)."""
  path = storage.as_path(workdir) / "checkpoints"
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, save_interval_steps=save_interval_steps, create=True)
  # The handler named: item_metadata (the stored shapes a resume is checked against) needs it.
  return ocp.CheckpointManager(path, options=options, item_handlers=ocp.StandardCheckpointHandler())
