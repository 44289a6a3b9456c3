"""Swapping Autoencoder on FFHQ at 512 px (upstream experiments/ffhq512_launcher.py, `ffhq512_default`, of
taesungp/swapping-autoencoder-pytorch, commit 6baa180f1184ee79a6b967f9d80ee0e02a979ac7).

  python -m jaxgeal.datasets.prepare folder --path ffhq/images1024x1024 --out data --size 512
  python -m jaxgeal.main --config=configs/swapae_ffhq.py --workdir=workdirs/swapae_ffhq \
      --config.data.source=data/jaxgeal_image_folder/512_center/1.0.0

The launcher's settings: 512 px (images resized, not cropped), batch 16 over 8 GPUs (group_size 2), reference
aggregation on, 25M images; everything else as configs/swapae_church.py (`:tiny` likewise).
"""

from jaxgeal.trainers import config_variants, swapae


def get_config(arg=None):
  c = swapae.base_config()
  c.model.crop_size = 512
  c.data.size = 512
  c.batch_size = 16
  c.group_size = 2
  c.micro_batch_size = 16
  c.data.source = ""  # required: a prepared dataset dir
  return config_variants.sibling(__file__, "swapae_church").variant(c, arg)
