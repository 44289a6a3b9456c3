"""GANgealing on LSUN Horses: K=4 clusters. Upstream has no training script for horses; the settings are the
cars script's (K=4, flips, 5 directions, inject 6, sampling from full resolution) and the test-time settings
are upstream's table (reflection, 3 iterations).

  python -m jaxgeal.main --config=configs/horses.py --workdir=workdirs/horses
  python -m jaxgeal.main --config=configs/horses.py:tiny --workdir=/tmp/horses-tiny   # CPU-sized, seconds
"""

from jaxgeal.trainers import config_variants


def get_config(arg=None):
  c = config_variants.sibling(__file__, "cars").get_config(arg)
  if c.generator.checkpoint is not None:  # :tiny uses a random generator
    c.generator.checkpoint = "pretrained/horses_generator"
  return c
