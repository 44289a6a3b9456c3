"""The Swapping Autoencoder demo (jaxgeal/trainers/swapae_demo.py): synthetic heads -> Swapping Autoencoder ->
swaps scored against the exact true hybrids of held-out renders.

  python -m jaxgeal.main --config=configs/swapae_demo.py --workdir=/tmp/swapae-demo
  python -m jaxgeal.main --config=configs/swapae_demo.py:tiny --workdir=/tmp/swapae-demo-t   # smoke test

Everything is rendered (no downloads). The model is upstream's architecture narrowed for 32 px on a CPU: an 8 x 8
structure code of 2 channels (the paper's code holds ~1 % of a 256 px image's values; 8 x 8 x 2 is 4 % of a
32 px image's), a 64-d texture code, 16 px patches cropped at 1/4-1/2 of the image (upstream's 1/8-1/4 of 256 px
would be 4-8 px crops here), R1 weight 1 (StyleGAN2's heuristic scales gamma with resolution squared), L1
weight 10 (at upstream's 1 the reconstruction error stalled within 2000 steps; benchmarks/README.md).
Writes swapping.json, report.md, grid.png (the swap grid) and truth.png (the true hybrids) into the workdir.
"""

import ml_collections

from jaxgeal.trainers import config_variants, swapae


def get_config(arg=None):
  size = 32
  c = ml_collections.ConfigDict()
  c.trainer = "swapae_demo"
  c.n_vis = 6
  # No clutter shapes, occluders or background value noise: their layout is drawn with the appearance, but a
  # spatial structure code would rightly keep it, so the truth would be ambiguous. Plain fur (no stripes, spots
  # or blotches): their placement on the head is drawn with the appearance too, and a global texture code
  # carries a texture's statistics, not where each stripe lies, so pixel distances to the truth would punish
  # a right swap. Colours, markings, lighting and backgrounds still come from the appearance.
  c.data = ml_collections.ConfigDict(
    dict(
      size=size,
      seed=0,
      num_train=4096,
      heldout_seed=1000,
      num_pairs=256,
      render=dict(mirror_prob=0.5, deformation=0.2, max_clutter=0, background_noise=False, fur_texture=False),
    )
  )
  # The key point detector that scores where swaps put A's key points (jaxgeal.evaluation.keypoint_detector),
  # trained on renders of its own seed (~1 min).
  c.detector = ml_collections.ConfigDict(dict(seed=2000, num_images=4096, steps=1000))
  s = swapae.base_config()
  s.model.update(
    crop_size=size,
    spatial_code_ch=2,
    global_code_ch=64,
    netE_num_downsampling_sp=2,
    netE_num_downsampling_gl=1,
    netE_scale_capacity=0.5,
    netG_scale_capacity=1 / 8,
    netD_scale_capacity=1 / 16,
    netD_max_nc=64,
    netPatchD_scale_capacity=0.5,
    netPatchD_max_nc=64,
    netPatchD_pair_widths=(128, 128, 64),
    patch_size=16,
  )
  s.loss.update(patch_min_scale=1 / 4, patch_max_scale=1 / 2, lambda_R1=1.0, lambda_L1=10.0)
  s.data.size = size
  s.batch_size = 16
  s.group_size = 4
  s.micro_batch_size = 16
  s.total_images = 64_000  # 2000 steps of 2 x 16 images
  s.log_every = 50
  s.vis_every = 1000
  s.ckpt_every = 1000
  s.n_vis = 6
  c.swapae = s
  return config_variants.apply_variant(c, arg, VARIANTS)


def tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Every stage at smoke-test size: a few renders, the tiny network, 2 steps, 8 pairs."""
  c.data.update(num_train=16, num_pairs=8)
  c.detector.update(num_images=16, steps=2)
  c.n_vis = 2
  s = config_variants.sibling(__file__, "swapae_church").get_config("tiny")  # what the trainer tests compile
  s.total_images = 2 * 2 * s.batch_size
  c.swapae = s
  return c


VARIANTS = {"tiny": tiny}
