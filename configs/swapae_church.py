"""Swapping Autoencoder on LSUN church (Park et al. 2020; upstream experiments/church_launcher.py of
taesungp/swapping-autoencoder-pytorch, commit 6baa180f1184ee79a6b967f9d80ee0e02a979ac7).

  python -m jaxgeal.datasets.prepare lsun --path downloads/lsun --category church_outdoor --out data --size 256
  python -m jaxgeal.main --config=configs/swapae_church.py --workdir=workdirs/swapae_church \
      --config.data.source=data/jaxgeal_lsun/church_outdoor_256_center/1.0.0
  python -m jaxgeal.main --config=configs/swapae_church.py:tiny --workdir=/tmp/swapae-tiny \
      --config.data.source=data/jaxgeal_image_folder/32_center/1.0.0     # CPU-sized, seconds

The launcher's hyperparameters: 256 px, batch 16 on 4 GPUs (group_size 4), structure code 8 x 16 x 16, texture
code 2048, 128 px patches, 8 crops, no reference aggregation, 25M images; Adam(0.002, betas (0, 0.99)), lazy R1
(10 on images, 1 on crops) every 16 D iterations. The trained model is exported to <workdir>/model (E, G, D,
Dpatch), what `python -m jaxgeal.swap` reads. `:tiny` is the same method at 32 px with narrow widths.
"""

import ml_collections

from jaxgeal.trainers import config_variants, swapae


def tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Same method at CPU size: 32 px, narrow widths, 16 px patches, 4 crops, a few steps, R1 every 2."""
  c.model.update(
    crop_size=32,
    spatial_code_ch=4,
    global_code_ch=16,
    netE_num_downsampling_sp=2,
    netE_num_downsampling_gl=1,
    netE_scale_capacity=0.125,
    netG_scale_capacity=1 / 32,
    netD_scale_capacity=1 / 64,
    netD_max_nc=16,
    netPatchD_scale_capacity=1 / 8,
    netPatchD_max_nc=16,
    netPatchD_pair_widths=(32, 32, 16),
    patch_size=16,
  )
  c.loss.patch_num_crops = 4
  c.optim.R1_once_every = 2
  c.data.size = 32
  c.batch_size = 8  # 8: the 8-device trainer test runs the same programs with one image per device
  c.group_size = 2
  c.micro_batch_size = 8
  c.total_images = 64  # 4 steps of one D and one G iteration
  c.log_every = 1
  c.vis_every = 2
  c.ckpt_every = 2
  c.n_vis = 2
  return c


VARIANTS = {"tiny": tiny}


def variant(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Apply `configs/swapae_*.py:<arg>` (None: the config itself)."""
  return config_variants.apply_variant(c, arg, VARIANTS)


def get_config(arg=None):
  c = swapae.base_config()  # upstream defaults, 256 px, batch 16 over 4 GPUs
  c.loss.patch_use_aggregation = False
  c.data.source = ""  # required: a prepared dataset dir (see the module docstring)
  return variant(c, arg)
