"""A small StyleGAN2 (64 px, narrow) for CPU experiments; same losses and schedules as configs/stylegan2_256.py.

  python -m jaxgeal.datasets.prepare folder --path MY_IMAGES --out data --size 64
  python -m jaxgeal.main --config=configs/stylegan2_64.py --workdir=workdirs/sg2_64 \
      --config.data.source=data/jaxgeal_image_folder/64_center/1.0.0

config.data.source is the prepared dataset directory printed by `python -m jaxgeal.datasets.prepare folder`
(<out>/jaxgeal_image_folder/64_center/1.0.0 here: prepare with --size 64). Widths 64 -> 16 channels,
style_dim 64 with a 4-layer mapping network; batch 8 and 20k steps: a few hours on a laptop CPU for simple
data such as the synthetic heads of jaxgeal.datasets.synthetic. `:tiny` is the 16 px smoke-test variant.
"""

from jaxgeal.trainers import config_variants, stylegan2


def small(c):
  """64 px, narrow widths (the synthetic-data demo uses these)."""
  c.model.update(size=64, style_dim=64, n_mlp=4, lr_mlp=0.01, channels=((4, 64), (8, 64), (16, 64), (32, 32), (64, 16)))
  c.data.size = 64
  c.batch_size = 8
  c.total_steps = 20_000
  c.log_every = 50
  c.vis_every = 1_000
  c.ckpt_every = 1_000
  c.n_vis = 16
  return c


def get_config(arg=None):
  c = small(stylegan2.base_config())
  c.data.source = ""  # required: a prepared dataset dir (see the module docstring)
  return config_variants.sibling(__file__, "stylegan2_256").variant(c, arg)
