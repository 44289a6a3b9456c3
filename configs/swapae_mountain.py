"""Swapping Autoencoder on Flickr mountains at 512 px (upstream experiments/mountain_launcher.py of
taesungp/swapping-autoencoder-pytorch, commit 6baa180f1184ee79a6b967f9d80ee0e02a979ac7).

  python -m jaxgeal.datasets.prepare folder --path flickr/mountain/train --out data --size 512
  python -m jaxgeal.main --config=configs/swapae_mountain.py --workdir=workdirs/swapae_mountain \
      --config.data.source=data/jaxgeal_image_folder/512_center/1.0.0

The launcher's settings: 512 px, batch 16 over 8 GPUs (group_size 2), patch R1 weight 10, reference aggregation
on, 25M images; everything else as configs/swapae_church.py (`:tiny` likewise).
"""

from jaxgeal.trainers import config_variants, swapae


def get_config(arg=None):
  c = swapae.base_config()
  c.model.crop_size = 512
  c.data.size = 512
  c.loss.lambda_patch_R1 = 10.0
  c.batch_size = 16
  c.group_size = 2
  c.micro_batch_size = 16
  c.data.source = ""  # required: a prepared dataset dir
  return config_variants.sibling(__file__, "swapae_church").variant(c, arg)
