"""GANgealing on LSUN TV Monitors, ADA generator with num_fp16_res 4 (scripts/training/tvmonitors.sh).

  python -m jaxgeal.main --config=configs/tvs.py --workdir=workdirs/tvs
  python -m jaxgeal.main --config=configs/tvs.py:tiny --workdir=/tmp/tvs-tiny   # CPU-sized, seconds

Paper hyperparameters (Peebles et al. 2022, appendix B) as in the script above, upstream repository
wpeebles/gangealing at commit ffa6387c7ffd3f7de76bdc693dc2272e274e9bfd. The frozen generator is read from
c.generator.checkpoint, a jaxgeal model directory converted from the published PyTorch file.
"""

from jaxgeal.trainers import gangealing_config


def get_config(arg=None):
  c = gangealing_config.base()
  c.generator.checkpoint = "pretrained/tvs_generator"
  c.perceptual.kind = "lpips"
  c.loss.tv_weight = 2500.0
  c.stn.padding_mode = "reflection"
  c.test.update(padding_mode="reflection", iters=3)
  return gangealing_config.variant(c, arg)
