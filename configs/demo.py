"""The embedded demo (jaxgeal/trainers/demo.py): synthetic heads -> StyleGAN2 -> GANgealing -> PCK-Transfer.

  python -m jaxgeal.main --config=configs/demo.py --workdir=/tmp/demo          # ~10 min on 2 CPU cores
  python -m jaxgeal.main --config=configs/demo.py:tiny --workdir=/tmp/demo-t   # smoke test

Everything is generated or shipped (no downloads). The 32 px StyleGAN2 is the one jaxgeal ships in
jaxgeal/assets/demo_stylegan2 (about 80 min to train on 2 cores, so the demo starts from it);
`configs/demo.py:train_gan` re-creates it from scratch (renders the training set into <workdir>/data, then
trains) and is what produced the shipped weights. Held-out renders with exact key points (another seed) are
scored. The GANgealing perceptual loss is `lcn`, a locally contrast-normalised MSE (no pretrained VGG
offline). Writes average.png, grid.png, pck.json and report.md into the workdir; stages resume.

  python -m jaxgeal.main --config=configs/demo.py:train_gan --workdir=/tmp/gan  # the shipped generator

The variants complex, closeup, bimodal and lopsided are harder categories for the fixed versus learned c
benchmarks (benchmarks/README.md); each fine-tunes the shipped generator on its own renders.
"""

import ml_collections

from jaxgeal.trainers import config_variants, gangealing_config, stylegan2


def get_config(arg=None):
  size = 32
  c = ml_collections.ConfigDict()
  c.trainer = "demo"
  c.n_vis = 8
  # No background clutter shapes: a 32 px StyleGAN2 learns the heads without them.
  c.data = ml_collections.ConfigDict(
    dict(
      size=size,
      seed=0,
      num_train=2048,
      heldout_seed=1000,
      num_heldout=100,
      num_pairs=200,
      render=dict(mirror_prob=0.0, deformation=0.2, max_clutter=0),
    )
  )
  s = stylegan2.base_config()
  s.model.update(size=size, style_dim=64, n_mlp=2, channels=((4, 64), (8, 64), (16, 32), (32, 16)))
  # R1 gamma scaled down with resolution (StyleGAN2-ADA's heuristic 0.0002 res^2 / batch ~ 0.01-0.05).
  s.optim.r1 = 0.05
  s.batch_size = 16
  s.total_steps = 40000  # ~80 min on 2 cores; fewer steps leave speckle (benchmarks/README.md)
  s.log_every = 100
  s.vis_every = 1000
  s.ckpt_every = 1000
  s.n_vis = 16
  # Relative to the jaxgeal package; None: train in the run.
  s.pretrained = gangealing_config.optional("assets/demo_stylegan2", str)
  c.stylegan2 = s
  g = gangealing_config.tiny(gangealing_config.base())
  g.real_size = size
  g.stn.update(flow_size=size, channels=((2, 16), (4, 16), (8, 16), (16, 16), (32, 8)))  # flow head reads res 2
  g.ll.update(inject=4)
  # No pretrained VGG offline: multi-scale locally contrast-normalised MSE (jaxgeal.losses.gangealing.
  # LocalContrastDistance); plain MSE let the STN zoom into background of the target's colour.
  g.perceptual.kind = "lcn"
  # One SGDR cycle after the psi annealing (total = anneal_psi + period: the LR reaches 0 at the end, no
  # restart), and an EMA half-life of 50 steps (the paper's 312-step half-life spans most of this short run).
  g.optim.update(anneal_psi=1000, period=5000)
  # STN learning rate 10x the paper's 1e-3: the STN's layers are equalised-LR (weights stored at unit scale), so
  # Adam moves them ~10x slower than a conventional net; the paper's 1.5M steps absorb that, 6000 do not.
  g.optim.stn_lr = 1e-2
  # The equivariance term (jaxgeal.losses.gangealing.equivariance_loss, not in the paper) asks for the rotation
  # that the lcn loss barely sees (x and its target differ in shape and texture). How these settings were
  # found, and what else was tried: benchmarks/README.md.
  g.loss.equivariance_weight = 30.0
  g.total_steps = 6000
  g.ema_decay = 0.5 ** (1 / 50)
  g.batch_size = 16
  g.micro_batch_size = 16
  g.log_every = 100
  g.vis_every = 500
  g.ckpt_every = 500
  g.test.update(padding_mode="border", iters=1)
  c.gangealing = g
  return config_variants.apply_variant(c, arg, VARIANTS)


def train_gan(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Trains the 32 px StyleGAN2 from scratch instead of starting from the shipped one (which it re-creates)."""
  c.stylegan2.pretrained = None
  return c


def tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Every stage at smoke-test size: a few renders, a narrow generator trained 2 steps, 2 GANgealing steps."""
  s, g = c.stylegan2, c.gangealing
  s.pretrained = None
  c.data.update(num_train=16, num_heldout=8, num_pairs=8)
  s.model.update(style_dim=16, channels=((4, 16), (8, 16), (16, 8), (32, 8)))
  s.optim.update(d_reg_every=2, g_reg_every=2)
  s.update(batch_size=4, total_steps=2, log_every=1, vis_every=0, ckpt_every=2, n_vis=4)
  g.stn.update(channels=((2, 8), (4, 8), (8, 8), (16, 8), (32, 8)))
  g.ll.update(inject=2, pca_samples=256, pca_batch=256)
  g.optim.update(anneal_psi=2, period=2)
  g.update(total_steps=2, batch_size=2, micro_batch_size=2, log_every=1, vis_every=0, ckpt_every=2, n_vis=2)
  c.n_vis = 4
  return c


def _fine_tuned(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  # The harder categories start from the shipped generator and fine-tune it on their own renders (~20-40 min
  # on 2 cores) instead of training from scratch (~80 min).
  c.stylegan2.pretrained = None
  c.stylegan2.init_from = "assets/demo_stylegan2"
  c.stylegan2.total_steps = 10000
  return c


def complex_(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A harder category: background clutter shapes and a wider rotation spread (benchmarks/alignment_complex.md)."""
  c.data.render.update(max_clutter=6, max_rotation=30.0)
  return _fine_tuned(c)


def closeup(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Two framings, as LSUN Cats mixes full and upper bodies (the paper's App. D): half the renders are
  close-ups whose head overfills the frame (benchmarks/alignment_closeup.md)."""
  c.data.render.update(closeup_prob=0.5)
  return _fine_tuned(c)


def bimodal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Two poses and nothing between them: every head leans left or right by 45-75 deg, none is upright
  (benchmarks/alignment_bimodal.md)."""
  c.data.render.update(rotation_offset=60.0, max_rotation=15.0)
  return _fine_tuned(c)


def lopsided(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Two unequal poses: 70% of the heads lean clockwise, 30% counter-clockwise (45-75 deg), so that the mean
  latent lies between a majority and a minority pose (benchmarks/alignment_lopsided.md)."""
  c.data.render.update(rotation_offset=60.0, max_rotation=15.0, clockwise_prob=0.7)
  return _fine_tuned(c)


VARIANTS = {
  "tiny": tiny,
  "train_gan": train_gan,
  # The fine-tuned categories made to test fixed versus learned c (the paper's Table 3); results in
  # benchmarks/README.md.
  "complex": complex_,
  "closeup": closeup,
  "bimodal": bimodal,
  "lopsided": lopsided,
}
