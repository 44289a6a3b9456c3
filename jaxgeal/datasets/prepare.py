"""Prepare datasets: the command-line counterpart of upstream GANgealing's `prepare_data.py`.

  python -m jaxgeal.datasets.prepare folder --path my_images/ --out data/ --size 256 --pad center
  python -m jaxgeal.datasets.prepare lsun --path downloads/lsun --category cat --out data/
  python -m jaxgeal.datasets.prepare spair --path SPair-71k/ --category cat --split test --out data/
  python -m jaxgeal.datasets.prepare cub --path CUB_200_2011/ --acsm_mat val_cub_cleaned.mat --out data/

Upstream flags keep their meaning (wpeebles/gangealing at ffa6387, `prepare_data.py`): --size takes a comma list
(one dataset per size), --pad zero|border|center|resize_small_side|none, --format png|jpeg, --max_images, --cub_acsm;
upstream's --lsun_category, --spair_category and --spair_split are the subcommands' --category and --split, and its
--n_worker is --num_workers. Nothing is downloaded: --path is the data you downloaded (each subcommand's --help
says which layout). Each dataset goes to <out>/<builder>/<config>/1.0.0/, printed at the end with the images
that could not be read. A build with too many unreadable images fails listing how many (and the first ten) and
leaves no directory it created; an existing dataset is only rebuilt with --overwrite. Errors (bad paths,
unwritable --out) are one line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys

from jaxgeal import cli
from jaxgeal.datasets import base, cub, image_folder, lsun, preprocessing, spair


def _sizes(text: str) -> list[int]:
  try:
    sizes = [int(s) for s in text.split(",") if s.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(f"--size: expected integers like 256 or 128,256, got {text!r}") from None
  if not sizes or min(sizes) <= 0:
    raise argparse.ArgumentTypeError(f"--size: expected positive sizes, got {text!r}")
  return sizes


def _common(p: argparse.ArgumentParser, pads, default_pad: str):
  p.add_argument("--path", required=True, help="the downloaded data / image folder")
  p.add_argument("--out", required=True, help="output data directory (datasets go to OUT/<builder>/<config>/)")
  p.add_argument("--size", type=_sizes, default=[256], help="output size(s), comma separated (default 256)")
  p.add_argument("--pad", choices=pads, default=default_pad, help=f"crop / pad mode (default {default_pad})")
  p.add_argument("--format", choices=base.IMAGE_FORMATS, default="png", help="stored image format (default png)")
  p.add_argument("--max_images", type=cli.positive_int, default=None, help="keep only the first N")
  p.add_argument(
    "--max_bad_fraction",
    type=cli.fraction,
    default=base.DEFAULT_MAX_BAD_FRACTION,
    help="fail if more than this fraction of images is unreadable (default 0.01)",
  )
  p.add_argument(
    "--num_workers",
    type=cli.positive_int,
    default=None,
    help="decoding threads (default min(8, CPUs))",
  )
  p.add_argument("--overwrite", action="store_true", help="rebuild even if the dataset exists")


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog="python -m jaxgeal.datasets.prepare",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
    allow_abbrev=False,
  )
  sub = p.add_subparsers(dest="kind", required=True, metavar="{folder,lsun,spair,cub}")
  f = sub.add_parser(
    "folder",
    help="any folder of images (recursive)",
    description=image_folder.__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
    allow_abbrev=False,
  )
  _common(f, preprocessing.PAD_MODES, "center")
  f.add_argument("--pattern", default=None, help="glob relative to --path instead of the extension search")
  ls = sub.add_parser(
    "lsun",
    help="an LSUN category (LMDB or exported images)",
    description=lsun.__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
    allow_abbrev=False,
  )
  _common(ls, preprocessing.PAD_MODES, "center")
  ls.add_argument("--category", required=True, help="e.g. cat, dog, horse, church_outdoor")
  sp = sub.add_parser(
    "spair",
    help="SPair-71k pairs of one category",
    description=spair.__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
    allow_abbrev=False,
  )
  _common(sp, preprocessing.PAD_MODES, "border")
  sp.add_argument("--category", required=True, help="e.g. cat, dog, bicycle, tvmonitor")
  sp.add_argument("--split", choices=list(spair.SPLITS), default="test")
  cb = sub.add_parser(
    "cub",
    help="CUB-200-2011 key points",
    description=cub.__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
    allow_abbrev=False,
  )
  _common(cb, ("bbox",) + preprocessing.PAD_MODES, "bbox")
  cb.add_argument(
    "--split", choices=cub.SPLITS, default=None, help="acsm_val (default when --acsm_mat is given), train or test"
  )
  cb.add_argument("--acsm_mat", default=None, help="ACSM's val_cub_cleaned.mat (split acsm_val)")
  cb.add_argument("--cub_acsm", action="store_true", help="upstream's flag: split acsm_val with the bbox crop")
  cb.add_argument("--num_pairs", type=cli.nonnegative_int, default=0, help="store N seeded random pairs")
  return p


def run(args: argparse.Namespace) -> list[base.BuildReport]:
  options = {
    "image_format": args.format,
    "max_images": args.max_images,
    "max_bad_fraction": args.max_bad_fraction,
    "overwrite": args.overwrite,
  }
  if args.num_workers is not None:
    options["num_workers"] = args.num_workers
  reports = []
  for size in args.size:
    if args.kind == "folder":
      reports.append(
        image_folder.build_image_folder(args.path, args.out, size, args.pad, pattern=args.pattern, **options)
      )
    elif args.kind == "lsun":
      reports.append(lsun.build_lsun(args.path, args.out, args.category, size, args.pad, **options))
    elif args.kind == "spair":
      reports.append(spair.build_spair(args.path, args.out, args.category, args.split, size, args.pad, **options))
    else:
      split = args.split or ("acsm_val" if args.acsm_mat or args.cub_acsm else "test")
      pad = "bbox" if args.cub_acsm else args.pad
      reports.append(
        cub.build_cub(
          args.path, args.out, split, size, pad, acsm_mat=args.acsm_mat, num_pairs=args.num_pairs, **options
        )
      )
  return reports


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  try:
    cli.check_output_dir(args.out)
    reports = run(args)
  except (base.MissingDataError, base.TooManyBadImagesError, ImportError, ValueError, OSError) as e:
    cli.print_error(cli.error_line(e))
    return 1
  for report in reports:
    print(report.summary())
  return 0


if __name__ == "__main__":
  sys.exit(main())
