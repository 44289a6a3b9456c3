"""GANgealing on LSUN Dogs (scripts/training/dogs.sh).

  python -m jaxgeal.main --config=configs/dogs.py --workdir=workdirs/dogs
  python -m jaxgeal.main --config=configs/dogs.py:tiny --workdir=/tmp/dogs-tiny   # CPU-sized, seconds

Paper hyperparameters (Peebles et al. 2022, appendix B) as in the script above, upstream repository
wpeebles/gangealing at commit ffa6387c7ffd3f7de76bdc693dc2272e274e9bfd. The frozen generator is read from
c.generator.checkpoint, a jaxgeal model directory converted from the published PyTorch file.
"""

from jaxgeal.trainers import gangealing_config


def get_config(arg=None):
  c = gangealing_config.base()
  c.generator.checkpoint = "pretrained/dogs_generator"
  c.perceptual.kind = "lpips"
  c.loss.tv_weight = 2500.0
  c.stn.padding_mode = "border"
  c.test.update(padding_mode="border", iters=3)
  return gangealing_config.variant(c, arg)
