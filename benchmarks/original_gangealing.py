"""The original PyTorch GANgealing timed as `gangealing_step.py` and `stylegan2.py` time jaxgeal: its training
step, its generator's forward and its congealing, paper configuration (random weights: frozen 256 px generator,
channel multiplier 2, similarity + flow STN at flow size 128, LPIPS-VGG16, inject 5), median seconds of
`--repeats` calls after one warm-up call.

It runs the unmodified upstream code (wpeebles/gangealing, `models/` at commit ffa6387) under a CPU PyTorch,
in an environment of its own (jaxgeal needs no torch):

  git clone https://github.com/wpeebles/gangealing /tmp/gangealing
  python -m venv /tmp/torch-cpu
  /tmp/torch-cpu/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
  /tmp/torch-cpu/bin/pip install numpy scikit-learn   # the original's PCA is sklearn's
  /tmp/torch-cpu/bin/python benchmarks/original_gangealing.py --upstream /tmp/gangealing --json

Only what a CPU lacks is replaced, nothing numerical: the CUDA extensions are not built (on a CPU tensor the
original's ops take their own PyTorch fallbacks), torchvision's VGG16 trunk is built layer for layer with random
weights (only `.features` is used), `.cuda()` leaves tensors on the CPU, and nothing is downloaded. The
training step is the body of upstream train.py's loop (`gangealing_loss`, total variation and flow identity
terms, backward, both Adam steps, the EMA `accumulate`), without its logging. `versus_original.py` runs this and
`gangealing_step.py` alternately and writes the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
import types

import numpy as np

try:
  import torch
  from torch import nn
except ModuleNotFoundError:  # jaxgeal's own environment: the parser (--help, tests) works, main says what to do
  torch = nn = None

UPSTREAM_COMMIT = "ffa6387c7ffd3f7de76bdc693dc2272e274e9bfd"


def vgg16_features() -> nn.Sequential:
  """torchvision's `vgg16().features` (31 modules), random weights."""
  layers, c = [], 3
  for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
    if v == "M":
      layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    else:
      layers += [nn.Conv2d(c, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
      c = v
  return nn.Sequential(*layers)


def install_stubs():
  """Modules the original imports and a CPU benchmark never runs: torchvision (VGG16 and download helpers) and
  the CUDA extension builder (its kernels are used on CUDA tensors only); `Tensor.cuda()` keeps a tensor where
  it is."""
  tv = types.ModuleType("torchvision")
  tv_models = types.ModuleType("torchvision.models")
  tv_models.vgg16 = lambda pretrained=False, **_: types.SimpleNamespace(features=vgg16_features())
  tv.models = tv_models
  tv_datasets = types.ModuleType("torchvision.datasets")
  tv_utils = types.ModuleType("torchvision.datasets.utils")
  for name in ("download_and_extract_archive", "download_file_from_google_drive", "download_url", "extract_archive"):
    setattr(tv_utils, name, lambda *a, **k: None)
  tv_datasets.utils = tv_utils
  tv.datasets = tv_datasets
  for name, module in {
    "torchvision": tv,
    "torchvision.models": tv_models,
    "torchvision.datasets": tv_datasets,
    "torchvision.datasets.utils": tv_utils,
  }.items():
    sys.modules[name] = module
  import torch.utils.cpp_extension as cpp_extension  # pylint: disable=import-outside-toplevel

  cpp_extension.load = lambda *a, **k: None
  # A few buffers are moved with `.cuda()` (the identity flow, the PCA basis): they stay on the CPU here.
  torch.Tensor.cuda = lambda self, *a, **k: self


def timed(fn, repeats: int) -> tuple[float, float]:
  """(median seconds over `repeats` calls after one warm-up call, seconds of the first call)."""
  t0 = time.perf_counter()
  fn()
  first = time.perf_counter() - t0
  fn()
  times = []
  for _ in range(max(1, repeats)):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times), first


def matmul_peak(n: int = 4096, repeats: int = 5) -> dict[str, float]:
  """fp32 n x n matmul GFLOP/s of torch and of numpy (best of `repeats` each) and the best of both."""
  out = {}
  for name, make, mm in (
    ("torch", lambda: torch.randn(n, n), torch.mm),
    ("numpy", lambda: np.random.default_rng(0).standard_normal((n, n), dtype=np.float32), np.matmul),
  ):
    a, b = make(), make()
    mm(a, b)
    best = min(timed(lambda mm=mm, a=a, b=b: mm(a, b), 1)[0] for _ in range(repeats))
    out[name] = 2 * n**3 / best / 1e9
  out["best"] = max(out.values())
  return out


def cpu_model() -> str:
  """As jaxgeal.throughput.cpu_model (which needs jax): the model name and its widest vector unit."""
  name, flags = platform.processor() or platform.machine(), set()
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        name = line.split(":", 1)[1].strip()
      elif line.startswith("flags"):
        flags = set(line.split(":", 1)[1].split())
  except OSError:
    pass
  vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
  return f"{name} ({vector})" if vector else name


def upstream_commit(path: pathlib.Path) -> str | None:
  """The clone's checked-out commit (this script was written against UPSTREAM_COMMIT), None outside git."""
  res = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True)
  return res.stdout.strip() if res.returncode == 0 else None


def build(args):
  """The paper configuration's networks, optimisers and loss as upstream train.py builds them (random G)."""
  # Upstream's modules import once --upstream is on sys.path.
  from models import (  # pylint: disable=import-outside-toplevel
    PCA,
    BilinearDownsample,
    DirectionInterpolator,
    Generator,
    accumulate,
    get_stn,
    requires_grad,
  )
  from models.losses.lpips import LPIPS  # pylint: disable=import-outside-toplevel

  torch.manual_seed(0)
  generator = Generator(args.gen_size, 512, 8, channel_multiplier=2).eval()
  requires_grad(generator, False)
  make_stn = lambda: get_stn(["similarity", "flow"], flow_size=args.flow_size, supersize=args.real_size,
                             channel_multiplier=0.5, num_heads=1)  # fmt: skip
  stn, t_ema = make_stn(), make_stn()
  ll = DirectionInterpolator(pca_path=None, n_comps=1, inject_index=5, n_latent=generator.n_latent, num_heads=1)
  accumulate(t_ema, stn, 0)
  with torch.no_grad():
    ll.assign_buffers(PCA(1, generator.batch_latent(4096)))  # upstream: 1M samples; set-up, not the step
  t_optim = torch.optim.Adam(stn.parameters(), lr=0.001, betas=(0.9, 0.999), eps=1e-8)
  ll_optim = torch.optim.Adam(ll.parameters(), lr=0.01, betas=(0.9, 0.999), eps=1e-8)
  # get_perceptual_loss('lpips') is LPIPS(net='vgg') with the v0.1 linear weights read from disk: random here.
  loss_fn = LPIPS(net="vgg", pretrained=False, verbose=False)
  resize = BilinearDownsample(args.gen_size // args.flow_size, 3)
  return types.SimpleNamespace(G=generator, stn=stn, t_ema=t_ema, ll=ll, t_optim=t_optim, ll_optim=ll_optim,
                               loss_fn=loss_fn, resize=resize, accumulate=accumulate)  # fmt: skip


def train_step(m, batch: int, psi: float = 1.0, tv_weight: float = 2500.0, flow_identity_weight: float = 1.0):
  """One iteration of upstream train.py's loop (unimodal, configs of cats_lpips: tv 2500, border padding)."""
  from models import flow_identity_loss, gangealing_loss, total_variation_loss  # pylint: disable=import-outside-toplevel

  perceptual, delta_flow = gangealing_loss(m.G, m.stn, m.ll, m.loss_fn, m.resize, psi, batch, 512, False, "cpu",
                                           sample_from_full_res=False, padding_mode="border")  # fmt: skip
  loss = (
    perceptual + tv_weight * total_variation_loss(delta_flow) + flow_identity_weight * flow_identity_loss(delta_flow)
  )
  m.stn.zero_grad()
  m.ll.zero_grad()
  loss.backward()
  m.t_optim.step()
  m.ll_optim.step()
  m.accumulate(m.t_ema, m.stn, 0.5 ** (32 / (10 * 1000)))
  return perceptual.detach().item()


def row(name, seconds, images, first, **extra):
  return {"workload": name, **extra, "seconds": seconds, "images_per_s": images / seconds, "first_call_s": first}


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    description=__doc__.split("\n\n")[0],
    formatter_class=argparse.RawTextHelpFormatter,
    allow_abbrev=False,
  )
  p.add_argument("--upstream", required=True, help="a clone of wpeebles/gangealing")
  p.add_argument("--batch_sizes", default="1,5", help="training step batch sizes, comma-separated")
  p.add_argument("--g_batch_sizes", default="1,4", help="generator forward batch sizes ('' for none)")
  p.add_argument("--congeal_batch_size", type=int, default=8)
  p.add_argument("--iters", default="1,3", help="congealing similarity passes, comma-separated")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--gen_size", type=int, default=256)
  p.add_argument("--real_size", type=int, default=256)
  p.add_argument("--flow_size", type=int, default=128)
  p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
  p.add_argument("--json", action="store_true", help="print only the final JSON object")
  return p


def main(argv=None):
  args = build_parser().parse_args(argv)
  if torch is None:
    sys.exit("error: this script runs the original under PyTorch, not in jaxgeal's environment: see its docstring")
  upstream = pathlib.Path(args.upstream).resolve()
  if not (upstream / "models" / "losses" / "loss.py").is_file():
    sys.exit(f"error: --upstream {args.upstream}: not a clone of wpeebles/gangealing (no models/losses/loss.py)")
  if args.threads:
    torch.set_num_threads(args.threads)
  install_stubs()
  sys.path.insert(0, str(upstream))
  os.chdir(upstream)  # upstream resolves pretrained/ and its op sources relative to the working directory

  info = {
    "cpu": cpu_model(),
    "cpu_count": os.cpu_count(),
    "torch": torch.__version__,
    "torch_threads": torch.get_num_threads(),
    "upstream": str(upstream),
    "upstream_commit": upstream_commit(upstream),
    "load_average_1min": os.getloadavg()[0],
  }
  peak = matmul_peak()
  m = build(args)
  common = dict(gen_size=args.gen_size, flow_size=args.flow_size, perceptual="lpips")
  rows = []
  for batch in map(int, args.batch_sizes.split(",")):
    seconds, first = timed(lambda b=batch: train_step(m, b), args.repeats)
    rows.append(row(f"train step, batch {batch}", seconds, batch, first, batch=batch, **common))
    if not args.json:
      print(json.dumps(rows[-1]), flush=True)
  for batch in map(int, args.g_batch_sizes.split(",") if args.g_batch_sizes else []):
    z = torch.randn(batch, 512, generator=torch.Generator().manual_seed(2))

    @torch.no_grad()
    def forward(z=z):
      return m.G([z])[0]  # upstream's default: fresh noise maps each call

    seconds, first = timed(forward, args.repeats)
    rows.append(
      row(f"G fwd, {args.gen_size} px, batch {batch}", seconds, batch, first, size=args.gen_size, batch=batch)
    )
    if not args.json:
      print(json.dumps(rows[-1]), flush=True)
  n = args.congeal_batch_size
  x = torch.rand(n, 3, args.real_size, args.real_size, generator=torch.Generator().manual_seed(1)) * 2 - 1
  for iters in [int(i) for i in args.iters.split(",") if i]:

    @torch.no_grad()
    def congeal(iters=iters):
      return m.t_ema(x, iters=iters, padding_mode="border")

    seconds, first = timed(congeal, args.repeats)
    name = f"congeal {args.real_size}->{args.flow_size}, batch {n}, iters {iters}"
    rows.append(row(name, seconds, n, first, batch=n, iters=iters, **common))
    if not args.json:
      print(json.dumps(rows[-1]), flush=True)
  result = {"benchmark": "original_gangealing", **info, "matmul_peak_gflops_per_s": peak, "results": rows}
  print(json.dumps(result, indent=1))
  return result


if __name__ == "__main__":
  main()
