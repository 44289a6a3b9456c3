"""Swapping Autoencoder demo on the synthetic heads: render -> train -> swap against exact ground truth, on a CPU.

A small Swapping Autoencoder (Park et al. 2020) is trained with `jaxgeal.trainers.swapae` on renders of
`jaxgeal.datasets.synthetic`, whose pose / shape and appearance are drawn separately, so that the true
"structure of A, texture of B" of held-out renders is known exactly (`jaxgeal.evaluation.swapping`).

Stages, each in its own directory under the workdir and skipped when its output exists (re-running resumes):

  data/      rendered train images, prepared (as the alignment demo's)
  swapae/    `jaxgeal.trainers.swapae`; exports swapae/model (what `python -m jaxgeal.swap` reads)
  swapping.json, report.md, grid.png, truth.png   held-out pairs scored against the truth (key points by a
             colour-blind detector trained here on renders of its own seed, ~1 min); the swap grid of a few
             held-out renders and the grid of their true hybrids
"""

from __future__ import annotations

import json
import logging
import pathlib
import time

import ml_collections
import numpy as np

from jaxgeal import distributed, images, storage
from jaxgeal.datasets import synthetic
from jaxgeal.evaluation import keypoint_detector, swapping
from jaxgeal.trainers import demo, resume, swapae


def train(config, workdir: pathlib.Path, source: str) -> pathlib.Path:
  out = workdir / "swapae"
  c = ml_collections.ConfigDict(config.swapae.to_dict())
  c.data.source = source
  if not resume.finished(out, c):
    swapae.train_and_evaluate(c, str(out))
  return out / "model"


def detector(config) -> keypoint_detector.KeypointDetector:
  """The colour-blind key point detector of the swap scores, trained on renders of `config.detector.seed`."""
  d, k = config.data, config.detector
  options = synthetic.RenderOptions(**d.render)
  return keypoint_detector.train(d.size, options, k.seed, num_images=k.num_images, steps=k.steps)


def grids(autoencoder, config) -> tuple[np.ndarray, np.ndarray]:
  """The swap grid of `n_vis` held-out renders (textures along the top, structures down the left) and the grid
  of their true hybrids, laid out alike."""
  d, n = config.data, config.n_vis
  options = synthetic.RenderOptions(**d.render)
  seed = d.heldout_seed
  renders = np.stack([synthetic.render(seed, i, d.size, options)["image"] for i in range(n)])
  s, t = autoencoder.encode(renders)
  swapped = np.stack([np.asarray(autoencoder.decode(s[i : i + 1].repeat(n, 0), t)) for i in range(n)])
  truth = np.stack([np.stack([swapping.hybrid(seed, i, j, d.size, options) for j in range(n)]) for i in range(n)])
  return swapae.swap_grid(renders, renders, swapped), swapae.swap_grid(renders, renders, truth)


def write_report(workdir: pathlib.Path, config, result: dict):
  text = [
    "# Swapping Autoencoder demo",
    "",
    f"{config.swapae.total_images} training images seen at {config.data.size} px "
    f"({config.data.num_train} renders); held-out seed {config.data.heldout_seed}.",
    f"Time: {', '.join(f'{k} {v:.0f} s' for k, v in result['seconds'].items())}.",
    "",
    swapping.markdown(result),
    "![swap grid](grid.png) ![truth](truth.png)",
  ]
  (workdir / "report.md").write_text("\n".join(text) + "\n")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  from jaxgeal.swap import SwappingAutoencoder

  if storage.is_remote(workdir):  # It builds and reads its datasets in the workdir with local file APIs.
    raise ValueError(
      f"--workdir={workdir}: the Swapping Autoencoder demo runs on one machine; give it a local work directory"
    )
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  seconds = {}
  t = time.perf_counter()
  source = demo.prepare_data(config, workdir)
  seconds["data"] = time.perf_counter() - t
  t = time.perf_counter()
  model = train(config, workdir, source)
  seconds["swapae"] = time.perf_counter() - t
  if not distributed.is_primary():  # the evaluation runs in one process, and process 0 writes its results
    return {}
  t = time.perf_counter()
  autoencoder = SwappingAutoencoder.load(model)
  d = config.data
  pairs = swapping.render_pairs(d.num_pairs, d.size, d.heldout_seed, synthetic.RenderOptions(**d.render))
  result = swapping.evaluate(autoencoder, pairs, detector(config).detect)
  grid, truth = grids(autoencoder, config)
  images.save_image(workdir / "grid.png", grid)
  images.save_image(workdir / "truth.png", truth)
  seconds["evaluation"] = time.perf_counter() - t
  result.update(seconds=seconds, image_size=int(d.size), total_images=int(config.swapae.total_images))
  (workdir / "swapping.json").write_text(json.dumps(result, indent=1))
  write_report(workdir, config, result)
  logging.info(
    "swap vs truth: l1 %.4f (copy structure %.4f, copy texture %.4f); on the object %.4f (%.4f, %.4f)",
    *(result["vs_truth"][k]["l1"]["mean"] for k in ("swap", "copy_structure", "copy_texture")),
    *(result["object_l1"][k]["mean"] for k in ("swap", "copy_structure", "copy_texture")),
  )
  return result
