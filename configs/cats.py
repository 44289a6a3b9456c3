"""GANgealing on LSUN Cats, vgg_ssl loss (scripts/training/cats_ssl.sh).

  python -m jaxgeal.main --config=configs/cats.py --workdir=workdirs/cats
  python -m jaxgeal.main --config=configs/cats.py:tiny --workdir=/tmp/cats-tiny   # CPU-sized, seconds

Paper hyperparameters (Peebles et al. 2022, appendix B) as in the script above, upstream repository
wpeebles/gangealing at commit ffa6387c7ffd3f7de76bdc693dc2272e274e9bfd. The frozen generator is read from
c.generator.checkpoint, a jaxgeal model directory converted from the published PyTorch file.
"""

from jaxgeal.trainers import gangealing_config


def get_config(arg=None):
  c = gangealing_config.base()
  c.generator.checkpoint = "pretrained/cats_generator"
  c.perceptual.kind = "vgg_ssl"
  c.loss.tv_weight = 1000.0
  c.stn.padding_mode = "border"
  c.test.update(padding_mode="border", iters=3)
  return gangealing_config.variant(c, arg)
