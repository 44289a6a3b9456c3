"""StyleGAN2 at 256 px with rosinality's train.py defaults (Karras et al. 2020, config F; §2-3, appendix B).

  python -m jaxgeal.datasets.prepare folder --path MY_IMAGES --out data --size 256
  python -m jaxgeal.main --config=configs/stylegan2_256.py --workdir=workdirs/sg2_256 \
      --config.data.source=data/jaxgeal_image_folder/256_center/1.0.0
  python -m jaxgeal.main --config=configs/stylegan2_256.py:tiny --workdir=/tmp/sg2-tiny \
      --config.data.source=data/jaxgeal_image_folder/16_center/1.0.0     # CPU-sized, seconds

config.data.source is a prepared dataset directory (what `python -m jaxgeal.datasets.prepare folder ...`
prints at the end): <out>/jaxgeal_image_folder/<size>_<pad>/1.0.0, whose images must be config.model.size
pixels square (prepare with --size equal to the model size; the `tiny` variant is 16 px). The trained
generator is exported to <workdir>/model (g_ema, g, d): pass that directory as a GANgealing config's
generator.checkpoint.

Paper-scale hyperparameters: batch 16, Adam(0.002, betas (0, 0.99)) with lazy regularisation (R1 gamma 10
every 16 D steps, path length 2 every 4 G steps), style mixing 0.9, 800k steps, channel multiplier 2.
"""

import ml_collections

from jaxgeal.trainers import config_variants, stylegan2


def tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Same method at CPU size: 16 px, tiny widths, a few steps, regularisers every 2 steps."""
  c.model.update(size=16, style_dim=16, n_mlp=2, channels=((4, 16), (8, 16), (16, 8)))
  c.data.size = 16
  c.optim.update(d_reg_every=2, g_reg_every=2)
  c.batch_size = 4
  c.total_steps = 4
  c.log_every = 1
  c.vis_every = 2
  c.ckpt_every = 2
  c.n_vis = 4
  return c


VARIANTS = {"tiny": tiny}


def variant(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Apply `configs/stylegan2_*.py:<arg>` (None: the config itself)."""
  return config_variants.apply_variant(c, arg, VARIANTS)


def get_config(arg=None):
  c = stylegan2.base_config()  # trainer="stylegan2", 256 px, rosinality defaults
  c.data.source = ""  # required: a prepared dataset dir (see the module docstring)
  return variant(c, arg)
