"""GANgealing on CUB-200 birds (no upstream script; dogs' loss settings, test-time settings from upstream's table).

  python -m jaxgeal.main --config=configs/cub.py --workdir=workdirs/cub
  python -m jaxgeal.main --config=configs/cub.py:tiny --workdir=/tmp/cub-tiny   # CPU-sized, seconds

Paper hyperparameters (Peebles et al. 2022, appendix B); upstream repository wpeebles/gangealing at commit
ffa6387c7ffd3f7de76bdc693dc2272e274e9bfd: scripts/training/dogs.sh, and PRETRAINED_TEST_HYPERPARAMS in
utils/download.py. The frozen generator is read from c.generator.checkpoint, a jaxgeal model directory
converted from the published PyTorch file.
"""

from jaxgeal.trainers import gangealing_config


def get_config(arg=None):
  c = gangealing_config.base()
  c.generator.checkpoint = "pretrained/cub_generator"
  c.perceptual.kind = "lpips"
  c.loss.tv_weight = 2500.0
  c.stn.padding_mode = "border"
  c.test.update(padding_mode="border", iters=1)
  return gangealing_config.variant(c, arg)
