"""PCK-Transfer: how accurately key points transfer between images (Peebles et al., CVPR 2022, Sec. 4.2, B.7).

The command line `python -m jaxgeal.evaluation.pck` (`--model DIR`: `model_pck`; `--predictions`: a method's
saved transfers) and the Python API in one place: the metric and the SPair / CUB protocols live in `metric`,
the dataset structure and its files in `annotations`; both are re-exported here.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxgeal import cli
from jaxgeal.evaluation.annotations import (
  FORMAT,
  RecordImages,
  annotations_to_json,
  as_dataset,
  image_widths,
  keypoints_and_visibility,
  load_annotations,
  load_predictions,
  save_annotations,
  save_predictions,
)
from jaxgeal.evaluation.metric import (
  DEFAULT_ALPHAS,
  TransferFn,
  alpha_key,
  evaluate_predictions,
  flip_annotations,
  flip_images,
  image_thresholds,
  mirror_keypoints,
  mirror_visibility,
  pck_transfer,
  sample_pairs,
  score,
)

__all__ = [
  "DEFAULT_ALPHAS",
  "FORMAT",
  "RecordImages",
  "TransferFn",
  "alpha_key",
  "annotations_to_json",
  "as_dataset",
  "evaluate_predictions",
  "flip_annotations",
  "flip_images",
  "format_results",
  "image_thresholds",
  "image_widths",
  "keypoints_and_visibility",
  "load_annotations",
  "load_predictions",
  "main",
  "mirror_keypoints",
  "mirror_visibility",
  "pck_transfer",
  "sample_pairs",
  "save_annotations",
  "save_predictions",
  "score",
]


def format_results(results: Mapping[str, Any]) -> str:
  parts = [
    f"PCK-Transfer@{a:g}: {100 * results[alpha_key(a)]:.2f}%"
    + (f" (std {100 * results[alpha_key(a) + '_std']:.2f})" if alpha_key(a) + "_std" in results else "")
    for a in results["alphas"]
  ]
  return " | ".join(parts) + f"  [{results['num_pairs']} pairs, {results['num_keypoints']} key points]"


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m jaxgeal.evaluation.pck",
    description=__doc__.split("\n\n")[0],
    formatter_class=argparse.RawDescriptionHelpFormatter,
    allow_abbrev=False,
    epilog="A GANgealing model directory (--model) is run on the annotated images and scored. Any other\n"
    "method: write the pairs to predict (--write_pairs), predict them, then score the predictions\n"
    "(--predictions). From Python: jaxgeal.evaluation.pck.pck_transfer(transfer_fn, dataset).",
  )
  parser.add_argument("--annotations", help="annotations JSON, or a folder holding annotations.json")
  parser.add_argument(
    "--dataset",
    help="instead of --annotations: a prepared key point dataset (name or folder; "
    "python -m jaxgeal.datasets.prepare), with --split",
  )
  parser.add_argument("--split", default=None, help="split of --dataset (default: its only / test split)")
  parser.add_argument("--model", help="GANgealing model directory (t_ema) to run on the images and score")
  parser.add_argument(
    "--no_flip",
    action="store_true",
    help="for --model: no flip inference (app. B.4; upstream --no_flip_inference)",
  )
  parser.add_argument(
    "--iters",
    type=cli.positive_int,
    default=None,
    help="for --model: similarity STN iterations (default: the model's test setting)",
  )
  parser.add_argument("--padding_mode", default=None, help="for --model: default the model's test setting")
  parser.add_argument(
    "--predictions",
    help="npz/json with 'pairs' (R, 2), 'keypoints' (R, P, 2) and optionally "
    "'flips' (R, 2) (source / target mirrored by the method) to score",
  )
  parser.add_argument("--write_pairs", help="write the pairs to predict (JSON) instead of scoring")
  parser.add_argument(
    "--alphas", type=cli.positive_float, nargs="+", default=list(DEFAULT_ALPHAS), help="PCK thresholds"
  )
  parser.add_argument(
    "--threshold",
    choices=["bbox", "image"],
    default=None,
    help="PCK unit: max bbox side (SPair) or max image side (CUB); default: bbox if annotated",
  )
  parser.add_argument(
    "--pairs",
    choices=["fixed", "random"],
    default=None,
    help="for --write_pairs / --model: the annotated pairs or random ones (default: fixed if annotated)",
  )
  parser.add_argument(
    "--num_pck_pairs", type=cli.positive_int, default=None, help="for --write_pairs / --model: how many pairs"
  )
  parser.add_argument("--transfer_both_ways", action="store_true", help="for --write_pairs / --model: also B -> A")
  parser.add_argument(
    "--num_bootstrap", type=cli.nonnegative_int, default=0, help="bootstrap resamples for standard deviations"
  )
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", help="also write the results JSON here")
  return parser


def main(argv=None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if sum(a is not None for a in (args.predictions, args.write_pairs, args.model)) != 1:
    parser.error(
      "give exactly one of --model (run and score it), --predictions (score them) or --write_pairs "
      "(list the pairs to predict)"
    )
  if (args.annotations is None) == (args.dataset is None):
    parser.error("give exactly one of --annotations (JSON) or --dataset (a prepared key point dataset)")
  if args.dataset and not args.model:
    parser.error("--dataset works with --model; with --predictions or --write_pairs use --annotations")
  try:
    inputs = [
      f
      for d in (args.annotations, args.predictions, args.dataset, args.model)
      if d and pathlib.Path(d).exists()
      for f in cli.files_under(d)
    ]
    for what, path in (("--out", args.out), ("--write_pairs", args.write_pairs)):
      if path:
        cli.check_output_file(path, what)
    cli.check_outputs([args.out, args.write_pairs], inputs)
    if args.model:
      from jaxgeal.evaluation import model_pck  # pylint: disable=g-import-not-at-top

      results = model_pck.run_cli(args)
    else:
      dataset = load_annotations(args.annotations)
      if args.write_pairs:
        mode = args.pairs or ("fixed" if dataset.get("pairs") is not None else "random")
        rows = sample_pairs(len(dataset["keypoints"]), mode, dataset.get("pairs"), args.num_pck_pairs, args.seed)
        if args.transfer_both_ways:
          rows = np.concatenate([rows, rows[:, ::-1]])
        pathlib.Path(args.write_pairs).write_text(json.dumps({"pairs": rows.tolist()}))
        print(f"wrote {len(rows)} {mode} pairs to {args.write_pairs}", file=sys.stderr)
        return 0
      rows, predicted, flips = load_predictions(args.predictions)
      results = evaluate_predictions(
        dataset, rows, predicted, args.alphas, args.threshold, args.num_bootstrap, args.seed, flips
      )
    text = json.dumps(results, indent=1)
    if args.out:
      pathlib.Path(args.out).write_text(text)
  except (OSError, ValueError, KeyError) as e:
    cli.print_error(cli.error_line(e))
    return 2
  print(format_results(results), file=sys.stderr)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
