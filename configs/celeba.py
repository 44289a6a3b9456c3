"""GANgealing on CelebA 128 px, 512 PCA directions, inject 6 (scripts/training/celeba.sh).

  python -m jaxgeal.main --config=configs/celeba.py --workdir=workdirs/celeba
  python -m jaxgeal.main --config=configs/celeba.py:tiny --workdir=/tmp/celeba-tiny   # CPU-sized, seconds

Paper hyperparameters (Peebles et al. 2022, appendix B) as in the script above, upstream repository
wpeebles/gangealing at commit ffa6387c7ffd3f7de76bdc693dc2272e274e9bfd. The frozen generator is read from
c.generator.checkpoint, a jaxgeal model directory converted from the published PyTorch file.
"""

from jaxgeal.trainers import gangealing_config


def get_config(arg=None):
  c = gangealing_config.base()
  c.generator.checkpoint = "pretrained/celeba_generator"
  c.perceptual.kind = "lpips"
  c.loss.tv_weight = 2500.0
  c.stn.padding_mode = "border"
  c.generator.size = 128
  c.real_size = 128
  c.ll.update(ndirs=512, inject=6)
  c.test.update(padding_mode="border", iters=1)
  return gangealing_config.variant(c, arg)
