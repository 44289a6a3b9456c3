"""Command line: convert upstream PyTorch checkpoints into jaxgeal model directories (no torch needed).

  python -m jaxgeal.convert stylegan2 SRC.pt OUT_DIR [--overwrite]
  python -m jaxgeal.convert lpips VGG16.pth OUT_DIR [--lin lpips_vgg_v0.1.pt] [--overwrite]
  python -m jaxgeal.convert gangealing SRC.pt OUT_DIR [--inject 5] [--flow_size N] [--overwrite]
  python -m jaxgeal.convert swapae CHECKPOINT.pth OUT_DIR [--overwrite]

`stylegan2` takes a rosinality training checkpoint ({'g', 'd', 'g_ema', ...}), a GANgealing checkpoint (its
`g_ema`) or a bare generator state dict; it writes every network it finds (g_ema, g, d).
`gangealing` takes a GANgealing training or cluster-classifier checkpoint and writes g_ema, t, t_ema, ll and
classifier (whichever it holds); the latent learner's inject index is read from the checkpoint's pickled
training flags when present, else from --inject.
`swapae` takes a Swapping Autoencoder checkpoint (`<N>k_checkpoint.pth`, SwappingAutoencoderModel.state_dict())
and writes E and G, plus D and Dpatch when it holds them (test-time checkpoints do not). The architecture is read
from the tensor shapes; upstream's opt.txt (else opt.pkl) beside the checkpoint adds the options shapes cannot
say (noise, patch and loss settings); the command prints which file it used.

OUT_DIR must not be (or hold) the checkpoint read; an unwritable OUT_DIR is a one-line error.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Mapping

from jaxgeal import checkpoint, cli
from jaxgeal.convert import torch_pickle


def _stylegan2(args) -> int:
  from jaxgeal.convert import stylegan2

  ckpt = torch_pickle.load(args.src)
  models = stylegan2.convert_checkpoint(ckpt)
  out = checkpoint.save_models(args.out_dir, models, source=str(args.src), overwrite=args.overwrite)
  for name, (kind, config, _) in models.items():
    desc = ", ".join(f"{k}={v}" for k, v in config.items() if k != "channels")
    print(f"{name}: {kind} ({desc})")
  print(f"wrote {out}")
  return 0


def _lpips(args) -> int:
  from jaxgeal.convert import lpips

  out = lpips.convert_files(args.src, args.out_dir, lin_path=args.lin, overwrite=args.overwrite)
  name = "lpips (VGG16 + linear heads)" if args.lin else "vgg_ssl (VGG16 trunk, lpips=False)"
  print(f"{name}: wrote {out}")
  return 0


def _lpips_args(p):
  p.add_argument(
    "--lin",
    default=None,
    help="LPIPS v0.1 linear weights (lpips/weights/v0.1/vgg.pth, "
    "GANgealing's lpips_vgg_v0.1.pt); without it the trunk is saved as the 'vgg_ssl' loss",
  )


def _gangealing(args) -> int:
  from jaxgeal.convert import gangealing

  ckpt = torch_pickle.load(args.src)
  models = gangealing.convert_gangealing_checkpoint(ckpt, inject_index=args.inject, flow_size=args.flow_size)
  out = checkpoint.save_models(args.out_dir, models, source=str(args.src), overwrite=args.overwrite)
  for name, (kind, config, _) in models.items():
    desc = ", ".join(f"{k}={v}" for k, v in config.items() if k != "channels")
    print(f"{name}: {kind} ({desc})")
  print(f"wrote {out}")
  return 0


def _gangealing_args(p):
  p.add_argument(
    "--inject",
    type=cli.nonnegative_int,
    default=5,
    help="latent learner inject index when the checkpoint has no training flags (upstream --inject)",
  )
  p.add_argument(
    "--flow_size",
    type=cli.positive_int,
    default=None,
    help="only for an STN without a similarity stage (its weights do not determine flow_size)",
  )


def _swapae(args) -> int:
  from jaxgeal.convert import state_dict as sdc
  from jaxgeal.convert import swapae

  src = pathlib.Path(args.src)
  options, options_path = swapae.find_options(src)
  ckpt = torch_pickle.load(src)
  if not isinstance(ckpt, Mapping):
    raise sdc.ConversionError(
      f"{src} holds a {type(ckpt).__name__}, not a Swapping Autoencoder state dict (keys E.*, G.*, ...)"
    )
  models = swapae.convert_state_dict(ckpt, options)
  if options_path is not None:
    print(f"options: {options_path}")
  else:
    print("options: no opt.txt / opt.pkl beside the checkpoint; architecture inferred from tensor shapes")
  for name, (kind, config, _) in models.items():
    sub = config[swapae.NETWORKS[name]]
    desc = ", ".join(f"{k}={v}" for k, v in sub.items() if k != "channels")
    print(f"{name}: {kind} ({desc})")
  out = checkpoint.save_models(args.out_dir, models, source=str(src), overwrite=args.overwrite)
  print(f"wrote {out}")
  return 0


# name: (function, help[, function adding extra arguments to the subparser]).
CONVERTERS = {
  "stylegan2": (_stylegan2, "rosinality / GANgealing StyleGAN2 (g_ema, g, d)"),
  "lpips": (
    _lpips,
    "perceptual loss: VGG16 (torchvision or `features` state dict, e.g. "
    "simclr_vgg_phase150.pt) [+ --lin LPIPS linear weights]",
    _lpips_args,
  ),
  "gangealing": (_gangealing, "GANgealing checkpoint (g_ema, t, t_ema, ll[, classifier])", _gangealing_args),
  "swapae": (_swapae, "Swapping Autoencoder checkpoint (E, G[, D, Dpatch]); options from opt.txt / opt.pkl beside it"),
}


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m jaxgeal.convert",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
    allow_abbrev=False,
  )
  sub = parser.add_subparsers(dest="what", required=True)
  for name, (_, helptext, *extra_args) in CONVERTERS.items():
    p = sub.add_parser(name, help=helptext, allow_abbrev=False)
    p.add_argument("src", help="upstream PyTorch checkpoint (.pt/.pth)")
    p.add_argument("out_dir", help="output model directory (created)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model directory")
    for add_args in extra_args:
      add_args(p)
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  try:
    cli.check_output_dir(args.out_dir)
    out = pathlib.Path(args.out_dir)
    # save_models writes model.json and replaces variables/ (with --overwrite): neither may be an input.
    cli.check_outputs([out / "model.json", out / "variables"], [args.src, getattr(args, "lin", None)])
    return CONVERTERS[args.what][0](args)
  except (OSError, ValueError, KeyError) as e:
    # ConversionError, UnsafeCheckpointError and CheckpointFormatError are ValueErrors with clear messages.
    cli.print_error(cli.error_line(e))
    return 2


if __name__ == "__main__":
  sys.exit(main())
