"""Mixed precision: how far bfloat16 computation lands from upstream's float32 outputs (config.dtype).

Runs the inputs of the upstream parity fixtures ($JAXGEAL_FIXTURES, see tests/fixtures.py: stylegan2_g,
stylegan2_d, stn, lpips, swapae) through our models built with `dtype=float32` and `dtype=bfloat16` (parameters
float32 in both), on weights converted from the fixtures' checkpoints, and prints one JSON object with, per
fixture output and dtype, the max abs error against upstream's recorded output and the relative error
||ours - upstream||_2 / ||upstream||_2. `--out FILE.md` also writes the numbers as a markdown report.

  JAXGEAL_FIXTURES=/work/shared/fixtures python benchmarks/precision.py --out benchmarks/precision.md
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import re
import sys
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the fixture loader of tests/

from jaxgeal.convert import gangealing as convert_gangealing  # noqa: E402
from jaxgeal.convert import lpips as convert_lpips  # noqa: E402
from jaxgeal.convert import stylegan2 as convert_stylegan2  # noqa: E402
from jaxgeal.convert import swapae as convert_swapae  # noqa: E402
from jaxgeal.convert import torch_pickle  # noqa: E402
from jaxgeal.models import lpips, stylegan2, swapae  # noqa: E402
from jaxgeal.models import stn as stn_lib  # noqa: E402
from tests import fixtures  # noqa: E402

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# One case: fixture output name -> (ours, upstream) arrays, for a given computation dtype.
Case = Callable[[object], dict[str, tuple[np.ndarray, np.ndarray]]]


def nhwc(x) -> np.ndarray:
  return fixtures.nchw_to_nhwc(x)


def errors(ours, upstream) -> dict[str, float]:
  """max abs error and relative L2 error of ours against upstream (both in float64)."""
  a, b = np.asarray(ours, np.float64), np.asarray(upstream, np.float64)
  assert a.shape == b.shape, (a.shape, b.shape)
  diff = a - b
  return {
    "max_abs": float(np.max(np.abs(diff))),
    "rel_l2": float(np.linalg.norm(diff) / max(np.linalg.norm(b), 1e-30)),
    "max_upstream": float(np.max(np.abs(b))),
  }


def stylegan2_g_cases(fx) -> Case:
  config, v = convert_stylegan2.convert_generator(fixtures.load_checkpoint(fx, fx.checkpoint_file())["g_ema"])

  def run(dtype):
    G = stylegan2.generator_from_config(config, dtype=dtype)
    img_z = jax.jit(lambda v, z: G.apply(v, z, randomize_noise=False))(v, jnp.asarray(fx["z"]))
    return {"img_z": (img_z, nhwc(fx["img_z"]))}

  return run


def stylegan2_d_cases(fx) -> Case:
  _, config, v = convert_stylegan2.convert_checkpoint(fixtures.load_checkpoint(fx, fx.checkpoint_file()))["d"]

  def run(dtype):
    D = stylegan2.discriminator_from_config(config, dtype=dtype)
    out = {}
    for b in ("b4", "b2"):
      if f"x_{b}" not in fx:
        continue
      x = jnp.asarray(nhwc(fx[f"x_{b}"]))
      out[f"d_out_{b}"] = (jax.jit(D.apply)(v, x), fx[f"d_out_{b}"])
      feats = jax.jit(lambda v, x: D.apply(v, x, method=D.features))(v, x)
      out[f"d_convs_{b}"] = (feats, nhwc(fx[f"d_convs_{b}"]))
    return out

  return run


def stn_cases(fx) -> Case:
  config, v = convert_gangealing.convert_stn(fixtures.load_checkpoint(fx, fx.checkpoint_file())["t_ema"])
  x = jnp.asarray(nhwc(fx["x"]))

  def run(dtype):
    stn = stn_lib.from_config(config, dtype=dtype)
    o = jax.jit(stn.apply)(v, x)
    out = {"out_default": (o.image, nhwc(fx["out_default"]))}
    if "grid" in fx:  # t_ema(x, return_warp=True, return_flow=True, return_sim=True)
      out["grid"] = (o.grid, fx["grid"])
    if "delta_flow" in fx:
      out["delta_flow"] = (o.flow, fx["delta_flow"])
    return out

  return run


def lpips_cases(fx) -> Case:
  state = lambda name: torch_pickle.load(fx.resolve(name))
  _, _, v_lpips = convert_lpips.convert(state("simclr_vgg_phase150.pt"), state("lpips_vgg_v0.1.pt"))
  _, _, v_ssl = convert_lpips.convert(state("simclr_vgg_phase150.pt"), None)

  def run(dtype):
    out = {}
    for size in sorted(int(k[3:]) for k in fx.arrays if re.fullmatch(r"x0_\d+", k)):
      x, y = (jnp.asarray(nhwc(fx[f"{n}_{size}"])) for n in ("x0", "x1"))
      for kind, v in (("lpips", v_lpips), ("vgg_ssl", v_ssl)):
        module = lpips.LPIPS(lpips=kind == "lpips", dtype=dtype)
        d = jax.jit(module.apply)(v, x, y)
        out[f"{kind}_{size}"] = (d, np.asarray(fx[f"{kind}_{size}"]).reshape(d.shape))
    return out

  return run


def swapae_cases(fx) -> Case:
  opt = fx.meta["constructor"]["opt"]
  models = convert_swapae.convert_state_dict(fixtures.load_checkpoint(fx, fx.checkpoint_file()), opt)
  config = models["E"][1]
  v = {name: variables for name, (_, _, variables) in models.items()}
  real = jnp.asarray(nhwc(fx["real"]))
  s_in, t_in = jnp.asarray(nhwc(fx["structure_code"])), jnp.asarray(fx["texture_code"])

  def run(dtype):
    E, G = swapae.encoder_from_config(config, dtype), swapae.generator_from_config(config, dtype)
    D = swapae.discriminator_from_config(config, dtype)
    by_module = {module: fx[name] for name, module in fx.meta["noise_layers"].items()}
    noise = [jnp.asarray(nhwc(by_module[f"G.{m}"])) for m, _ in G.noise_layers()]
    s, t = jax.jit(E.apply)(v["E"], real)
    rec = jax.jit(lambda v, s, t: G.apply(v, s, t, noise=noise))(v["G"], s_in, t_in)
    d_real = jax.jit(D.apply)(v["D"], real)
    return {
      "structure_code": (s, nhwc(fx["structure_code"])),
      "texture_code": (t, fx["texture_code"]),
      "rec": (rec, nhwc(fx["rec"])),
      "D_real": (d_real, fx["D_real"]),
    }

  return run


CASES = {
  "stylegan2_g": stylegan2_g_cases,
  "stylegan2_d": stylegan2_d_cases,
  "stn": stn_cases,
  "lpips": lpips_cases,
  "swapae": swapae_cases,
}


def all_fixtures(root: pathlib.Path) -> Iterator[tuple[str, object]]:
  for kind in CASES:
    for path in sorted(root.rglob(f"{kind}.json")):
      yield kind, fixtures.Fixture(path, root)


def measure(root: pathlib.Path) -> dict:
  results = {}
  for kind, fx in all_fixtures(root):
    run = CASES[kind](fx)
    per_dtype = {name: run(dt) for name, dt in DTYPES.items()}
    for output in per_dtype["float32"]:
      results[f"{fx.id}:{output}"] = {name: errors(*per_dtype[name][output]) for name in DTYPES}
    print(f"{fx.id}: done", file=sys.stderr)
  return results


def machine() -> str:
  devices = jax.devices()
  kinds = sorted({d.device_kind for d in devices})
  return f"{platform.machine()}, jax {jax.__version__} ({jax.default_backend()}: {', '.join(kinds)})"


def markdown(results: dict, command: str) -> str:
  lines = [
    "# bfloat16 against float32 (`config.dtype`): errors against upstream's float32 outputs",
    "",
    f"Written by `{command}` (do not edit by hand). Machine: {machine()}.",
    "",
    "Inputs and weights are those of the upstream parity fixtures (random weights, see tests/fixtures.py); our",
    "models run with `dtype=float32` and with `dtype=bfloat16` (activations and matmuls / convolutions in",
    "bfloat16; parameters, normalisations, demodulation, warps and outputs in float32). `max abs`: largest",
    "absolute error; `rel L2`: ||ours - upstream|| / ||upstream||; `bf16 / f32`: ratio of the max abs errors;",
    "`scale`: max |upstream|, the output's magnitude. How bfloat16 convolutions round and accumulate depends on",
    "the backend (XLA's CPU, GPU and TPU kernels differ), so another machine gives other bfloat16 numbers.",
    "The STN's grids are computed in float32, but from warps regressed by a bfloat16 trunk: their error is that of",
    "the regression, and the warped images inherit it.",
    "",
    "| fixture output | scale | max abs f32 | rel L2 f32 | max abs bf16 | rel L2 bf16 | bf16 / f32 |",
    "| --- | --- | --- | --- | --- | --- | --- |",
  ]
  for name, r in results.items():
    f, b = r["float32"], r["bfloat16"]
    lines.append(
      f"| {name} | {f['max_upstream']:.2g} | {f['max_abs']:.1e} | {f['rel_l2']:.1e} | {b['max_abs']:.1e} | "
      f"{b['rel_l2']:.1e} | {b['max_abs'] / max(f['max_abs'], 1e-30):.0f} |"
    )
  return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
  )
  p.add_argument("--out", default=None, help="also write a markdown report here")
  return p


def main(argv=None):
  args = build_parser().parse_args(argv)
  root = fixtures.fixture_root()
  if not root.is_dir():
    raise SystemExit(f"fixture directory {root} is absent: set $JAXGEAL_FIXTURES")
  results = measure(root)
  print(json.dumps({"machine": machine(), "results": results}, indent=1))
  if args.out:
    command = "python benchmarks/precision.py" + (f" --out {args.out}" if args.out else "")
    pathlib.Path(args.out).write_text(markdown(results, command))


if __name__ == "__main__":
  main()
