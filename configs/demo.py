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
"""

import ml_collections

from jaxgeal.trainers import config_variants, gangealing_config, stylegan2

FINE_TUNED = ("complex", "closeup", "bimodal", "lopsided")  # variants whose generator is the shipped one fine-tuned


def get_config(arg=None):
  size = 32
  c = ml_collections.ConfigDict()
  c.trainer = "demo"
  c.n_vis = 8
  # No background clutter shapes: a 32 px StyleGAN2 learns the heads without them. Heads are recognisable
  # after 8000 steps; 40000 (~80 min at ~8 steps/s) remove most of the speckle: demo PCK@0.1 0.43 -> 0.53.
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
  s.total_steps = 40000
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
  # LocalContrastDistance). Plain MSE let the STN zoom into background of the target's colour (PCK@0.1 0.08).
  g.perceptual.kind = "lcn"
  # One SGDR cycle after the psi annealing (total = anneal_psi + period: the LR reaches 0 at the end, no
  # restart), and an EMA half-life of 50 steps (the paper's 312-step half-life spans most of this short run).
  # Steps trade PCK@0.1 for time (similarity + flow, learned c, at the paper's STN LR 1e-3; GANgealing stage on 2
  # cores): 4000 steps 0.53 in ~7 min, 6000 steps 0.59 in ~9.5 min, 8000 steps 0.63 in ~13 min (too close to the
  # 15 min budget).
  g.optim.update(anneal_psi=1000, period=5000)
  # STN learning rate 10x the paper's 1e-3. The STN's layers are equalised-LR (weights stored at unit scale), so
  # Adam moves them ~10x slower than a conventional net; the paper's 1.5M steps absorb that, 6000 do not: at 1e-3
  # the STN learned shift and scale but almost no rotation (PCK@0.1 0.59); at 1e-2 0.78; 2e-2 diverges (NaN at
  # step 1800). Injecting c into 5 or 6 W+ layers instead of 4: 0.77, 0.74; lcn with 3 scales: 0.77; lcn sigma 4:
  # 0.77. Longer training helped little: two more 5000-step LR cycles (SGDR restarts, 16000 steps) 0.807, 0.815.
  g.optim.stn_lr = 1e-2
  # What was missing was rotation (7.8 of the renders' 10.9 deg spread left): x and its target differ in shape
  # and texture, so the lcn loss barely changes with a few degrees (-2% for 7.5 deg) and the STN under-rotated.
  # The equivariance term (jaxgeal.losses.gangealing.equivariance_loss, not in the paper: the similarity STN's
  # matrices must compose with random similarities of its input) asks for the whole rotation: weight 1: PCK@0.1
  # 0.84, 10: 0.94 (3.7 deg left), 30: 0.95 (3.5 deg left), at +8% step time. A similarity STN alone (no flow
  # stage) with it collapsed onto flat background (0.35): in matrix units the term is cheaper when zoomed in.
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
  if arg == "train_gan":
    s.pretrained = None
  elif arg == "tiny":
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
  elif arg == "complex":
    # A harder category for the fixed-c versus learned-c question (the paper: learning c "is critical for
    # complex datasets"): background clutter shapes and a wider rotation spread. The generator is the shipped
    # one fine-tuned on these renders (its heads carry over; the clutter is new). Its mean latent still renders a
    # clean upright head, and fixed c did as well as learned c (benchmarks/alignment_complex.md: PCK@0.1 learned
    # 0.74 / 0.77 for seeds 0 / 1, fixed 0.76 for seed 1; fixed c seed 0 collapsed onto flat background, 0.03).
    c.data.render.update(max_clutter=6, max_rotation=30.0)
  elif arg == "closeup":
    # Two framings of the category, as LSUN Cats mixes full bodies and upper bodies (the paper's App. D: the
    # mean-latent target is "often unsuitable as a dataset-wide congealing target", not "reachable" by all
    # images): half the renders are close-ups whose head overfills the frame (ears and chin cut off). The
    # generator is the shipped one fine-tuned on these renders. Its top W principal direction walks between the
    # framings, but the mean latent renders a clean small full-view head, and the learned c stayed there
    # (moved 0.15 std); benchmarks/alignment_closeup.md: with the zoom-neutral equivariance form, learned 0.69 vs
    # fixed 0.73 PCK@0.1; with the matrix form 3 of 4 runs collapsed onto flat background.
    c.data.render.update(closeup_prob=0.5)
  elif arg == "bimodal":
    # Two poses and nothing between them: every head leans left or right by 45-75 deg, none is upright. The
    # generator is the shipped one fine-tuned on these renders; its mean latent (fixed c) renders an
    # orientation-less blob, the unrealistic kind of target of the paper's App. D. But the learned c did not leave
    # it (0.11 std along the top W principal direction, which walks background brightness more than lean), and
    # neither STN rotated the heads: benchmarks/alignment_bimodal.md, zoom-neutral term: PCK@0.1 learned 0.40,
    # fixed 0.40 (no alignment 0.11); with the matrix form both collapsed onto flat background by step 800. With
    # c free in all 64 W directions (ll.ndirs=64) it drifted to an empty flat-colour target within 1000 steps.
    c.data.render.update(rotation_offset=60.0, max_rotation=15.0)
  elif arg == "lopsided":
    # Two unequal poses: 70% of the heads lean clockwise, 30% counter-clockwise (45-75 deg), so that the mean
    # latent lies between a majority and a minority pose and the gradient on c has a side to take. The learned c
    # moved 0.19 std along the top W principal direction and neither STN rotated the heads
    # (benchmarks/alignment_lopsided.md: PCK@0.1 learned 0.32, fixed 0.36, no alignment 0.14). With one look for
    # every image (render option appearance_of, so that pose is what varies) the fine-tuned generator dropped the
    # minority pose (6.6% of samples vs 30% of the data), and with one look and equal poses one pose as well.
    c.data.render.update(rotation_offset=60.0, max_rotation=15.0, clockwise_prob=0.7)
  elif arg:
    raise config_variants.UnknownVariantError.of(arg, ["tiny", "train_gan", *FINE_TUNED])
  if arg in FINE_TUNED:
    # The harder categories start from the shipped generator and fine-tune it on their own renders (~20-40 min
    # on 2 cores) instead of training from scratch (~80 min).
    s.pretrained = None
    s.init_from = "assets/demo_stylegan2"
    s.total_steps = 10000
  return c
