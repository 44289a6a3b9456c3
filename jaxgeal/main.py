"""Entry point for training: `python -m jaxgeal.main --config=configs/cats.py --workdir=DIR`.

The config (an ml_collections file; append `:tiny` for the CPU-sized variant) names its trainer; the trainer
reads everything else from it. Re-running with the same workdir resumes from the last checkpoint.
"""
from __future__ import annotations

import importlib
import logging
import sys

from absl import app, flags
from ml_collections import config_flags

TRAINERS = {"gangealing": "jaxgeal.trainers.gangealing", "stylegan2": "jaxgeal.trainers.stylegan2",
            "cluster_classifier": "jaxgeal.trainers.cluster_classifier", "demo": "jaxgeal.trainers.demo"}

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file (e.g. configs/cats.py or configs/cats.py:tiny).",
                                lock_config=False)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and visuals (resumes if it has some).")
flags.mark_flags_as_required(["config", "workdir"])


def run(config, workdir: str):
  name = config.get("trainer", "gangealing")
  if name not in TRAINERS:
    raise ValueError(f"config.trainer={name!r} is not one of {sorted(TRAINERS)}")
  return importlib.import_module(TRAINERS[name]).train_and_evaluate(config, workdir)


def main(argv):
  del argv
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  from jaxgeal import cli  # pylint: disable=g-import-not-at-top
  try:
    cli.check_output_dir(FLAGS.workdir, "--workdir")  # A file in the way, before anything compiles.
    run(FLAGS.config, FLAGS.workdir)
  except (OSError, ValueError) as e:  # OSError: an unwritable or missing path, named in one line.
    print(f"error: {cli.error_line(e)}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  app.run(main)
