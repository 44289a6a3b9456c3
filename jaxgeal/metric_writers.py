"""Metric writing for trainers: always a JSON-lines file and the Python log; TensorBoard when TensorFlow is
installed (clu's writers import it; `pip install jaxgeal[tf]`). Images go to PNG files under the workdir
(and to TensorBoard when available)."""
from __future__ import annotations

import json
import logging
import pathlib
import time
from typing import Mapping

import numpy as np

from jaxgeal import images


class MetricWriter:
  """Scalars -> workdir/metrics.jsonl (+ TensorBoard); images -> workdir/visuals/<name>_<step>.png."""

  def __init__(self, workdir: str | pathlib.Path, tensorboard: bool = True):
    self.workdir = pathlib.Path(workdir)
    self.workdir.mkdir(parents=True, exist_ok=True)
    self._jsonl = open(self.workdir / "metrics.jsonl", "a")
    self._tb = None
    if tensorboard:
      try:
        import tensorflow  # noqa: F401  (only probe: clu's writer needs it)
        from clu import metric_writers
        self._tb = metric_writers.create_default_writer(str(self.workdir / "tensorboard"), asynchronous=False)
      except ImportError:
        logging.info("TensorFlow not installed: metrics go to metrics.jsonl only (pip install jaxgeal[tf])")

  def write_scalars(self, step: int, scalars: Mapping[str, float]):
    scalars = {k: float(np.asarray(v)) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **scalars}) + "\n")
    self._jsonl.flush()
    logging.info("step %d: %s", step, ", ".join(f"{k}={v:.5g}" for k, v in scalars.items()))
    if self._tb is not None:
      self._tb.write_scalars(step, scalars)

  def write_images(self, step: int, grids: Mapping[str, np.ndarray]):
    for name, grid in grids.items():
      images.save_image(self.workdir / "visuals" / f"{name}_{step:07d}.png", grid)
    if self._tb is not None:
      self._tb.write_images(step, {k: np.asarray(v)[None] for k, v in grids.items()})

  def close(self):
    self._jsonl.close()
    if self._tb is not None:
      self._tb.close()
