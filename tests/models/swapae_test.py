"""Swapping Autoencoder networks: parity with the upstream PyTorch code, and specified behaviour.

Parity replays every `swapae` fixture (taesungp/swapping-autoencoder-pytorch, unmodified) on weights converted
from its checkpoint by our reader and converter: structure and texture codes, encoder features, reconstruction,
the training hybrid, D on real / reconstruction / hybrid, random crops, patch features and predictions. Sizes,
block counts, crop counts, code widths and noise layers are read from the json and the arrays' shapes.
Tolerance: max abs error <= 1e-4 on images, codes, features and logits.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgeal.convert import swapae as convert
from jaxgeal.losses import swapae as losses
from jaxgeal.models import swapae
from tests import fixtures
from tests.fixtures import assert_close, nchw_to_nhwc

ATOL = 1e-4
FIXTURES = fixtures.collect("swapae")


class Nets:
  """A fixture's converted networks, its recorded generator noise and loss options."""

  def __init__(self, fx):
    sd = fixtures.load_checkpoint(fx, fx.checkpoint_file())
    self.opt = fx.meta["constructor"]["opt"]
    models = convert.convert_state_dict(sd, self.opt)
    self.config = models["E"][1]
    self.E, self.G = swapae.encoder_from_config(self.config), swapae.generator_from_config(self.config)
    self.D = swapae.discriminator_from_config(self.config)
    self.P = swapae.patch_discriminator_from_config(self.config)
    self.v = {name: variables for name, (_, _, variables) in models.items()}
    # The recorded noise maps, put in our generator's noise-layer order through the json's module names.
    by_module = {module: fx[name] for name, module in fx.meta["noise_layers"].items()}
    self.noise = [jnp.asarray(nchw_to_nhwc(by_module[f"G.{m}"])) for m, _ in self.G.noise_layers()]
    assert len(self.noise) == len(fx.meta["noise_layers"])

  def encode(self, x, **kw):
    return self.E.apply(self.v["E"], x, **kw)

  def decode(self, s, t, key=None):
    return self.G.apply(self.v["G"], s, t, noise=self.noise)

  def discriminate(self, x):
    return self.D.apply(self.v["D"], x)

  def patch_features(self, crops, aggregate=False):
    return self.P.apply(self.v["Dpatch"], crops, aggregate, method=swapae.PatchDiscriminator.extract_features)

  def patch_discriminate(self, f1, f2):
    return self.P.apply(self.v["Dpatch"], f1, f2, method=swapae.PatchDiscriminator.discriminate_features)

  def networks(self) -> losses.Networks:
    return losses.Networks(self.encode, self.decode, self.discriminate, self.patch_features, self.patch_discriminate)

  def loss_options(self) -> losses.Options:
    names = [f.name for f in losses.dataclasses.fields(losses.Options)]
    return losses.Options(**{k: self.opt[k] for k in names if k in self.opt})


def crop_draws(fx, prefix: str) -> list[losses.CropDraws]:
  """`<prefix>_0, _1, ...` uniform draws, three per crop call (flip, scale, offset), upstream's shapes flattened."""
  seq = fx.sequence(prefix)
  assert seq and len(seq) % 3 == 0, f"{fx.id}: {len(seq)} {prefix}_i draws"
  n = seq[0].shape[0]
  return [
    (jnp.asarray(f.reshape(n)), jnp.asarray(s.reshape(n, 2)), jnp.asarray(o.reshape(n, 2)))
    for f, s, o in zip(seq[0::3], seq[1::3], seq[2::3])
  ]


@pytest.fixture(scope="module", params=FIXTURES)
def case(request):
  fx = request.param
  return fx, Nets(fx)


def _nhwc(fx, name):
  return jnp.asarray(nchw_to_nhwc(fx[name]))


def test_encoder_codes_and_features_match_upstream(case):
  fx, nets = case
  real = _nhwc(fx, "real")
  s, t, feature = jax.jit(lambda x: nets.encode(x, extract_features=True))(real)
  assert_close(s, nchw_to_nhwc(fx["structure_code"]), ATOL, "structure_code")
  assert_close(t, fx["texture_code"], ATOL, "texture_code")
  assert_close(feature, nchw_to_nhwc(fx["E_feature"]), ATOL, "E_feature")


def test_generator_reconstruction_and_hybrid_match_upstream(case):
  fx, nets = case
  s, t = jnp.asarray(nchw_to_nhwc(fx["structure_code"])), jnp.asarray(fx["texture_code"])
  decode = jax.jit(nets.decode)
  assert_close(decode(s, t), nchw_to_nhwc(fx["rec"]), ATOL, "rec")
  assert_close(decode(swapae.swap(s), t), nchw_to_nhwc(fx["mix"]), ATOL, "mix")


def test_discriminator_matches_upstream(case):
  fx, nets = case
  D = jax.jit(nets.discriminate)
  for name in ("real", "rec", "mix"):
    assert_close(D(_nhwc(fx, name)), fx[f"D_{name}"], ATOL, f"D_{name}")


def test_random_crops_and_patch_discriminator_match_upstream(case):
  fx, nets = case
  opts = nets.loss_options()
  draws = crop_draws(fx, "crop_rand")
  sources = {"crops_real": "real", "crops_target": "real", "crops_mix": "mix"}
  crops = {}
  for (name, source), d in zip(sources.items(), draws):
    b, n, _, p, _ = fx[name].shape
    crops[name] = losses.random_crops(_nhwc(fx, source), p, (opts.patch_min_scale, opts.patch_max_scale), n, d)
    expected = np.transpose(fx[name], (0, 1, 3, 4, 2))
    assert_close(crops[name], expected, ATOL, name)
  real_agg = nets.patch_features(crops["crops_real"], aggregate=True)
  target = nets.patch_features(crops["crops_target"])
  assert_close(real_agg, nchw_to_nhwc(fx["patch_feat_real_agg"]), ATOL, "patch_feat_real_agg")
  assert_close(target, nchw_to_nhwc(fx["patch_feat_target"]), ATOL, "patch_feat_target")
  assert_close(nets.patch_discriminate(real_agg, target), fx["patchD_real"], ATOL, "patchD_real")
  mix_feat = nets.patch_features(crops["crops_mix"])
  assert_close(nets.patch_discriminate(real_agg, mix_feat), fx["patchD_mix"], ATOL, "patchD_mix")


def test_converted_widths_equal_upstream_option_arithmetic(case):
  """The shapes-inferred architecture equals upstream's nc / nf / channel tables applied to the recorded
  options, with the two hard-coded widths the fixture narrowed read from the checkpoint."""
  fx, nets = case
  cfg = nets.config
  opt = dict(nets.opt)
  opt["netD_max_nc"] = dict(cfg["discriminator"]["channels"])[4]
  opt["netPatchD_pair_widths"] = cfg["patch_discriminator"]["pair_widths"]
  expected = swapae.widths_from_options(opt)
  for name in ("encoder", "generator", "discriminator", "patch_discriminator"):
    got = {
      k: (list(map(list, v)) if k == "channels" else list(v) if isinstance(v, (list, tuple)) else v)
      for k, v in cfg[name].items()
    }
    want = {
      k: (list(map(list, v)) if k == "channels" else list(v) if isinstance(v, (list, tuple)) else v)
      for k, v in expected[name].items()
    }
    assert got == want, name


def test_swap_exchanges_neighbours():
  x = jnp.arange(6)[:, None]
  np.testing.assert_array_equal(swapae.swap(x)[:, 0], [1, 0, 3, 2, 5, 4])
  with pytest.raises(ValueError, match="even batch"):
    swapae.swap(jnp.zeros((3, 1)))


def test_codes_are_unit_norm_and_generator_is_fully_convolutional():
  """Codes are L2-normalised over channels; a structure code twice as large decodes to an image twice as large."""
  opt = dict(
    crop_size=32,
    netE_num_downsampling_sp=2,
    netE_num_downsampling_gl=1,
    netE_scale_capacity=0.125,
    global_code_ch=16,
    spatial_code_ch=4,
    netG_scale_capacity=0.03125,
    patch_size=16,
  )
  cfg = swapae.widths_from_options(opt)
  E, G = swapae.encoder_from_config(cfg), swapae.generator_from_config(cfg)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
  # Jitted: one compile per call instead of one per operation.
  ve = jax.jit(E.init)(jax.random.PRNGKey(1), x)
  s, t = jax.jit(E.apply)(ve, x)
  assert s.shape == (2, 8, 8, 4) and t.shape == (2, 16)
  np.testing.assert_allclose(jnp.sum(s**2, -1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(jnp.sum(t**2, -1), 1.0, rtol=1e-5)
  rngs = {"params": jax.random.PRNGKey(2), "noise": jax.random.PRNGKey(3)}
  vg = jax.jit(G.init)(rngs, s, t)
  decode = jax.jit(lambda v, s, t: G.apply(v, s, t, rngs={"noise": jax.random.PRNGKey(4)}))
  assert decode(vg, s, t).shape == (2, 32, 32, 3)
  assert decode(vg, jnp.tile(s, (1, 2, 2, 1)), t).shape == (2, 64, 64, 3)
