"""Swapping Autoencoder on LSUN bedroom (upstream experiments/bedroom_launcher.py of
taesungp/swapping-autoencoder-pytorch, commit 6baa180f1184ee79a6b967f9d80ee0e02a979ac7).

  python -m jaxgeal.datasets.prepare lsun --path downloads/lsun --category bedroom --out data --size 256
  python -m jaxgeal.main --config=configs/swapae_bedroom.py --workdir=workdirs/swapae_bedroom \
      --config.data.source=data/jaxgeal_lsun/bedroom_256_center/1.0.0

As configs/swapae_church.py (`:tiny` likewise) with the launcher's batch: 32 over 8 GPUs (group_size 4);
256 px, no reference aggregation, 25M images.
"""

from jaxgeal.trainers import config_variants, swapae


def get_config(arg=None):
  c = swapae.base_config()
  c.loss.patch_use_aggregation = False
  c.batch_size = 32
  c.group_size = 4
  c.micro_batch_size = 32
  c.data.source = ""  # required: a prepared dataset dir
  return config_variants.sibling(__file__, "swapae_church").variant(c, arg)
