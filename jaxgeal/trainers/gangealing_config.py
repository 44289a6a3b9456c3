"""Default GANgealing hyperparameters (Peebles et al. 2022, appendix B; upstream repository wpeebles/gangealing at
commit ffa6387c7ffd3f7de76bdc693dc2272e274e9bfd: train.py's defaults and scripts/training/*.sh) and the CPU-sized
`tiny` variant.

configs/<category>.py start from `base()` and override what the paper's script for that category sets.
"""

import ml_collections
from ml_collections import config_dict

from jaxgeal.trainers import config_variants


def optional(value, field_type):
  """A field that may be None and keeps its type, so that `--config.<field>=...` can set it (ml_collections
  derives an override's parser from the field's type, and a plain None has none)."""
  return config_dict.FieldReference(value, field_type=field_type)


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.trainer = "gangealing"
  c.seed = 0
  # Frozen StyleGAN2: a jaxgeal model directory (python -m jaxgeal.convert stylegan2|gangealing SRC.pt DIR).
  c.generator = ml_collections.ConfigDict(
    dict(
      checkpoint=optional("pretrained/generator", str),
      name="g_ema",
      # Only used when checkpoint is None (random frozen generator: tests and benchmarks).
      size=256,
      style_dim=512,
      n_mlp=8,
      channel_multiplier=2,
      channels=optional(None, tuple),
    )
  )
  c.real_size = 256  # size of real images the STN will see at test time (STN "supersize")
  # Perceptual loss: vgg_ssl (SimCLR VGG16, /18), lpips (VGG16 + LPIPS v0.1 heads), or the offline stand-ins
  # mse and lcn (multi-scale locally contrast-normalised MSE, jaxgeal.losses.gangealing; lcn_sigma: its
  # Gaussian in px, lcn_scales: how many 2x-pooled sizes it compares).
  c.perceptual = ml_collections.ConfigDict(dict(kind="vgg_ssl", weights_dir="pretrained", lcn_sigma=2.0, lcn_scales=2))
  c.stn = ml_collections.ConfigDict(
    dict(
      transform=("similarity", "flow"),
      flow_size=128,
      channel_multiplier=0.5,
      num_heads=1,
      # channels: (res, width) pairs overriding the multiplier
      padding_mode="reflection",
      channels=optional(None, tuple),
    )
  )
  c.ll = ml_collections.ConfigDict(
    dict(ndirs=1, inject=5, freeze=False, pca_samples=1_000_000, pca_batch=4000, kmeans_samples=50_000)
  )
  c.flips = False
  c.sample_from_full_res = False
  # equivariance_*: a jaxgeal addition, off (weight 0) as in the paper: the similarity STN's matrices must
  # compose with random similarities of its input (rotation up to +-deg, log scale, shift in normalised
  # coordinates); see jaxgeal.losses.gangealing.equivariance_loss. equivariance_zoom_neutral: measure the
  # violation's linear part in units of the STN's own zoom (else zooming in makes it cheaper).
  c.loss = ml_collections.ConfigDict(
    dict(
      tv_weight=1000.0,
      flow_identity_weight=1.0,
      equivariance_weight=0.0,
      equivariance_rotation=30.0,
      equivariance_log_scale=0.2,
      equivariance_shift=0.25,
      equivariance_zoom_neutral=False,
    )
  )
  c.optim = ml_collections.ConfigDict(
    dict(
      stn_lr=1e-3,
      ll_lr=1e-2,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      anneal_psi=150_000,
      anneal_fn="cosine",
      period=37_500,
      decay=0.9,
      t_mult=2,
    )
  )
  c.ema_decay = 0.5 ** (32 / 10_000)
  c.total_steps = 1_500_000
  # Global batch 40 as the paper (8 GPUs x 5). A small batch collapses training (upstream issue #10); when
  # the devices cannot hold 40 at once, micro_batch_size < batch_size accumulates gradients.
  c.batch_size = 40
  c.micro_batch_size = 40
  c.num_devices = optional(None, int)  # None: all local devices
  c.dtype = "float32"  # activations / matmuls / convs: float32 or bfloat16 (params, optimiser state: float32)
  # The device mesh (jaxgeal/sharding.py): mesh.fsdp devices hold one copy of the parameters and optimiser state
  # split between them (FSDP), the other axis ("data", devices / fsdp) replicates it; 1 = data parallel. The
  # batch is split over all devices either way. Tensors under min_shard_size elements stay replicated.
  c.mesh = ml_collections.ConfigDict(dict(fsdp=1, min_shard_size=2**14))
  c.log_every = 25
  c.vis_every = 5_000
  c.ckpt_every = 50_000
  c.keep_checkpoints = 3
  c.n_vis = 16
  # Test-time settings (upstream PRETRAINED_TEST_HYPERPARAMS) stored with the trained model.
  c.test = ml_collections.ConfigDict(dict(padding_mode="border", iters=1))
  return c


def tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Same method at CPU size: random frozen 64 px generator, narrow 64 px STN (the smallest flow STN: its
  fourth ResBlock reads the width at flow_size / 16), MSE stand-in loss."""
  c.generator.checkpoint = None
  c.generator.update(size=64, style_dim=32, n_mlp=2, channels=((4, 32), (8, 32), (16, 16), (32, 8), (64, 8)))
  c.real_size = 64
  c.perceptual.kind = "mse"
  c.stn.update(flow_size=64, channels=((4, 16), (8, 16), (16, 16), (32, 16), (64, 8)))
  c.ll.update(pca_samples=2048, pca_batch=512, kmeans_samples=64, inject=min(c.ll.inject, 6))
  c.ll.ndirs = min(c.ll.ndirs, 4)
  c.optim.update(anneal_psi=10, period=10)
  c.total_steps = 20
  c.batch_size = 4
  c.micro_batch_size = 2
  c.log_every = 5
  c.vis_every = 10
  c.ckpt_every = 10
  c.n_vis = 4
  return c


VARIANTS = {"tiny": tiny}


def variant(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Apply `configs/X.py:<arg>` (None: the paper config)."""
  return config_variants.apply_variant(c, arg, VARIANTS)
