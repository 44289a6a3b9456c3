"""Convert the GANgealing-specific parts of a checkpoint (Peebles et al. 2022, §3) to jaxgeal variables.

A GANgealing training checkpoint holds `g_ema` (see `jaxgeal.convert.stylegan2`), the STN `t` / `t_ema` and
the latent learner `ll`. Each converter here takes one state dict and returns (config, variables); keys or
shapes it does not understand are refused (upstream loads some of these with strict=False).

`ll` (models/latent_learner.py::DirectionInterpolator): `coefficients` [K, ndirs] (the learned alphas of
eq. 4, one row per cluster), buffers `directions` [ndirs, D] (PCA components) and `lat_mean` [1, D].
`inject_index` and `n_latent` are constructor arguments, not tensors: upstream keeps them in the pickled
training `args` (`--inject`) and the generator, so the caller passes them.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from jaxgeal.convert import state_dict as sdc
from jaxgeal.models import latent_learner


def convert_latent_learner(sd: Mapping[str, np.ndarray], *, inject_index: int | None = None,
                           n_latent: int | None = None) -> tuple[dict, dict]:
  """`ll` state dict -> (config, variables) for `latent_learner.LatentLearner`.

  config: {num_heads, ndirs, style_dim} plus inject_index / n_latent when given.
  variables: {'params': {'coefficients'}, 'pca': {'directions', 'lat_mean'}}.
  """
  r = sdc.StateDictReader(sd, "GANgealing latent learner (ll)")
  coefficients = r.take("coefficients", 2)
  directions = r.take("directions", 2)
  lat_mean = r.take("lat_mean", 2)
  r.check_all_used()
  num_heads, ndirs = coefficients.shape
  if directions.shape[0] != ndirs:
    raise sdc.ConversionError(f"ll: coefficients {coefficients.shape} and directions {directions.shape} "
                              "disagree on the number of directions")
  style_dim = directions.shape[1]
  if lat_mean.shape != (1, style_dim):
    raise sdc.ConversionError(f"ll: lat_mean has shape {lat_mean.shape}, expected (1, {style_dim})")
  config = {"num_heads": int(num_heads), "ndirs": int(ndirs), "style_dim": int(style_dim)}
  if inject_index is not None:
    config["inject_index"] = int(inject_index)
  if n_latent is not None:
    config["n_latent"] = int(n_latent)
  variables = {"params": {"coefficients": coefficients},
               "pca": {"directions": directions, "lat_mean": lat_mean}}
  return config, variables


def build_latent_learner(config: Mapping, **overrides) -> latent_learner.LatentLearner:
  """The module for a converted config; inject_index and n_latent must come from config or overrides."""
  kw = {k: config[k] for k in ("num_heads", "ndirs", "style_dim", "inject_index", "n_latent") if k in config}
  kw.update(overrides)
  missing = [k for k in ("inject_index", "n_latent") if k not in kw]
  if missing:
    raise ValueError(f"build_latent_learner: {missing} are not stored in the ll state dict; pass them "
                     "(upstream: --inject, default 5, and the generator's n_latent)")
  return latent_learner.LatentLearner(**kw)
