"""Sample images from a converted StyleGAN2 generator (Karras et al. 2020) into a grid.

  python -m jaxgeal.sample --checkpoint MODEL_DIR --seeds 0-15 --truncation 0.7 --out grid.png

Seed s gives z = N(0, I) drawn from PRNGKey(s), so a seed names the same image on any machine. Truncation
(psi < 1) pulls every layer's w towards the mean of `--n_mean` mapped samples.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxgeal import checkpoint, cli, compile_cache, images
from jaxgeal.models import stylegan2


def parse_seeds(spec: str) -> list[int]:
  """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11]."""
  seeds = []
  for part in spec.split(","):
    part = part.strip()
    if not part:
      continue
    try:
      if "-" in part:
        lo, hi = part.split("-", 1)
        seeds.extend(range(int(lo), int(hi) + 1))
      else:
        seeds.append(int(part))
    except ValueError:
      raise ValueError(f"--seeds: cannot read {part!r}; use a list like 0-15 or 1,5,9") from None
  if not seeds:
    raise ValueError("--seeds: no seeds given")
  return seeds


def seed_latents(seeds, style_dim: int) -> jnp.ndarray:
  return jnp.stack([jax.random.normal(jax.random.PRNGKey(s), (style_dim,)) for s in seeds])


def sample(
  model_dir, seeds, truncation: float = 1.0, n_mean: int = 4096, noise_mode: str = "const", batch_size: int = 8
) -> np.ndarray:
  """Images (N, H, W, 3) in [-1, 1] for the given seeds."""
  _, config, variables = checkpoint.load_model(model_dir, kind="generator")
  G = stylegan2.generator_from_config(config)
  z = seed_latents(seeds, config["style_dim"])
  trunc_latent = None
  if truncation < 1:
    z_mean = jax.random.normal(jax.random.PRNGKey(123456789), (n_mean, config["style_dim"]))
    trunc_latent = jax.jit(lambda v, z: G.apply(v, z, method=G.mean_latent))(variables, z_mean)

  @jax.jit
  def generate(v, z, rngs):
    noise_rng = jax.vmap(lambda k: jax.random.fold_in(k, 1))(rngs)
    w = G.apply(v, z, method=G.mapping)
    if trunc_latent is not None:
      w = trunc_latent + truncation * (w - trunc_latent)
    latent = jnp.broadcast_to(w[:, None], (w.shape[0], G.n_latent, w.shape[-1]))
    if noise_mode == "random":
      # Per-seed noise, so an image does not depend on the batch it was drawn in.
      noise = [
        jax.vmap(lambda k, r=r, i=i: jax.random.normal(jax.random.fold_in(k, i), (r, r, 1)))(noise_rng)
        for i, r in enumerate(stylegan2.noise_resolutions(G.size))
      ]
      return G.apply(v, latent, noise, method=G.synthesis)
    return G.apply(v, latent, None, False, method=G.synthesis)

  keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
  out = []
  for i in range(0, len(seeds), batch_size):
    zb, kb = z[i : i + batch_size], keys[i : i + batch_size]
    n = zb.shape[0]
    if n < batch_size and len(seeds) > batch_size:  # keep one compiled shape
      zb = jnp.concatenate([zb, jnp.zeros((batch_size - n,) + zb.shape[1:])])
      kb = jnp.concatenate([kb, jnp.repeat(kb[:1], batch_size - n, 0)])
    out.append(np.asarray(generate(variables, zb, kb))[:n])
  return np.concatenate(out)


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog="python -m jaxgeal.sample",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
    allow_abbrev=False,
  )
  p.add_argument("--checkpoint", required=True, help="model directory written by `python -m jaxgeal.convert`")
  p.add_argument("--seeds", default="0-15", help="seeds, e.g. 0-15 or 1,5,9 (default 0-15)")
  p.add_argument("--truncation", type=float, default=1.0, help="psi in (0, 1]; 1 disables truncation")
  p.add_argument("--n_mean", type=cli.positive_int, default=4096, help="samples for the truncation mean latent")
  p.add_argument(
    "--noise_mode",
    choices=["const", "random"],
    default="const",
    help="const: the checkpoint's fixed noise buffers; random: per-seed noise",
  )
  p.add_argument("--batch_size", type=cli.positive_int, default=8)
  p.add_argument("--nrow", type=cli.positive_int, default=None, help="images per grid row (default: square)")
  p.add_argument("--out", default="grid.png", help="output image (PNG)")
  return p


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  compile_cache.enable()  # a second call starts in seconds (JAXGEAL_COMPILATION_CACHE=off: no cache)
  try:
    if not 0 < args.truncation <= 1:
      raise ValueError(f"--truncation must be in (0, 1], got {args.truncation}")
    seeds = parse_seeds(args.seeds)
    cli.check_output_file(args.out, "--out")
    cli.check_outputs([args.out], cli.files_under(args.checkpoint))
    imgs = sample(args.checkpoint, seeds, args.truncation, args.n_mean, args.noise_mode, args.batch_size)
    path = images.save_image(args.out, images.make_grid(imgs, nrow=args.nrow))
  except (OSError, ValueError, KeyError) as e:
    cli.print_error(cli.error_line(e))
    return 2
  print(f"wrote {path} ({len(seeds)} images, {imgs.shape[1]}x{imgs.shape[2]})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
