"""GANgealing on LSUN Cars: K=4 clusters with flips, 5 directions, inject 6, sampling from full resolution
(scripts/training/cars.sh).

  python -m jaxgeal.main --config=configs/cars.py --workdir=workdirs/cars
  python -m jaxgeal.main --config=configs/cars.py:tiny --workdir=/tmp/cars-tiny   # CPU-sized, seconds

Paper hyperparameters (Peebles et al. 2022, appendix B) as in the script above, upstream repository
wpeebles/gangealing at commit ffa6387c7ffd3f7de76bdc693dc2272e274e9bfd. The frozen generator is read from
c.generator.checkpoint, a jaxgeal model directory converted from the published PyTorch file.
"""

from jaxgeal.trainers import gangealing_config


def get_config(arg=None):
  c = gangealing_config.base()
  c.generator.checkpoint = "pretrained/cars_generator"
  c.perceptual.kind = "lpips"
  c.loss.tv_weight = 2500.0
  c.stn.padding_mode = "reflection"
  c.stn.num_heads = 4
  c.flips = True
  c.ll.update(ndirs=5, inject=6)
  c.sample_from_full_res = True
  c.test.update(padding_mode="reflection", iters=3)
  return gangealing_config.variant(c, arg)
