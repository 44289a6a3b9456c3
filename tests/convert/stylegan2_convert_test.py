"""StyleGAN2 converter and CLIs: architecture read from shapes, strict key handling, and the documented
round trip `python -m jaxgeal.convert stylegan2 SRC.pt OUT` -> `python -m jaxgeal.sample`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxgeal import checkpoint
from jaxgeal import sample as sample_cli
from jaxgeal.convert import __main__ as convert_cli
from jaxgeal.convert import state_dict as sdc
from jaxgeal.convert import stylegan2 as convert
from jaxgeal.models import stylegan2
from tests import fixtures
from tests.convert.keymaps import check_key_map, flat_shapes
from tests.fixtures import assert_close, nchw_to_nhwc


@pytest.mark.parity
@pytest.mark.parametrize("fx", fixtures.collect("stylegan2_g"))
def test_generator_architecture_is_read_from_the_checkpoint_shapes(fx):
  config = convert.generator_config(fixtures.load_checkpoint(fx, fx.checkpoint_file())["g_ema"])
  args = fx.meta["constructor"]["args"]
  assert (config["size"], config["style_dim"], config["n_mlp"]) == (args["size"], args["style_dim"], args["n_mlp"])
  assert {str(r): c for r, c in config["channels"]} == fx.meta["constructor"]["channels_override"]


@pytest.mark.parity
@pytest.mark.parametrize("fx", fixtures.collect("stylegan2_d"))
def test_discriminator_architecture_is_read_from_the_checkpoint_shapes(fx):
  config = convert.discriminator_config(fixtures.load_checkpoint(fx, fx.checkpoint_file())["d"])
  assert config["size"] == fx.meta["constructor"]["args"]["size"]
  assert {str(r): c for r, c in config["channels"]} == fx.meta["constructor"]["effective_channels"]


# -- the key maps, on every key of full-size rosinality state dicts (names and shapes only) ------------------------


def _config_f_channels(size: int, channel_multiplier: int = 2) -> dict[int, int]:
  cm = channel_multiplier
  table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm, 512: 32 * cm, 1024: 16 * cm}
  return {r: c for r, c in table.items() if r <= size}


def _rosinality_generator_shapes(size: int, style_dim: int, n_mlp: int, ch: dict[int, int]) -> dict:
  """{key: shape} of `Generator(size, style_dim, n_mlp).state_dict()` as rosinality/stylegan2-pytorch model.py
  (commit bef283a1c24087da704d16c30abc8e36e63efa0e) registers them: parameters and persistent buffers."""
  sd = {}
  for i in range(1, n_mlp + 1):  # style.0 is PixelNorm
    sd[f"style.{i}.weight"], sd[f"style.{i}.bias"] = (style_dim, style_dim), (style_dim,)
  sd["input.input"] = (1, ch[4], 4, 4)

  def modulated(prefix, cin, cout, k, upsample=False):
    sd[f"{prefix}.weight"] = (1, cout, cin, k, k)
    sd[f"{prefix}.modulation.weight"], sd[f"{prefix}.modulation.bias"] = (cin, style_dim), (cin,)
    if upsample:
      sd[f"{prefix}.blur.kernel"] = (4, 4)

  def styled(prefix, cin, cout, upsample=False):
    modulated(f"{prefix}.conv", cin, cout, 3, upsample)
    sd[f"{prefix}.noise.weight"], sd[f"{prefix}.activate.bias"] = (1,), (cout,)

  def to_rgb(prefix, cin, upsample=True):
    sd[f"{prefix}.bias"] = (1, 3, 1, 1)
    if upsample:
      sd[f"{prefix}.upsample.kernel"] = (4, 4)
    modulated(f"{prefix}.conv", cin, 3, 1)

  styled("conv1", ch[4], ch[4])
  to_rgb("to_rgb1", ch[4], upsample=False)
  log_size = int(np.log2(size))
  for i in range((log_size - 2) * 2 + 1):
    r = 2 ** ((i + 5) // 2)
    sd[f"noises.noise_{i}"] = (1, 1, r, r)
  cin = ch[4]
  for j, i in enumerate(range(3, log_size + 1)):
    cout = ch[2**i]
    styled(f"convs.{2 * j}", cin, cout, upsample=True)
    styled(f"convs.{2 * j + 1}", cout, cout)
    to_rgb(f"to_rgbs.{j}", cout)
    cin = cout
  return sd


def _rosinality_discriminator_shapes(size: int, ch: dict[int, int]) -> dict:
  """{key: shape} of rosinality model.py `Discriminator(size).state_dict()` (same commit)."""
  sd = {"convs.0.0.weight": (ch[size], 3, 1, 1), "convs.0.1.bias": (ch[size],)}
  cin = ch[size]
  for j, i in enumerate(range(int(np.log2(size)), 2, -1), start=1):
    cout = ch[2 ** (i - 1)]
    sd.update(
      {
        f"convs.{j}.conv1.0.weight": (cin, cin, 3, 3),
        f"convs.{j}.conv1.1.bias": (cin,),
        f"convs.{j}.conv2.0.kernel": (4, 4),
        f"convs.{j}.conv2.1.weight": (cout, cin, 3, 3),
        f"convs.{j}.conv2.2.bias": (cout,),
        f"convs.{j}.skip.0.kernel": (4, 4),
        f"convs.{j}.skip.1.weight": (cout, cin, 1, 1),
      }
    )
    cin = cout
  c4 = ch[4]
  sd.update(
    {
      "final_conv.0.weight": (c4, cin + 1, 3, 3),
      "final_conv.1.bias": (c4,),
      "final_linear.0.weight": (c4, c4 * 16),
      "final_linear.0.bias": (c4,),
      "final_linear.1.weight": (1, c4),
      "final_linear.1.bias": (1,),
    }
  )
  return sd


@pytest.mark.parametrize("size", [256, 1024])
def test_every_key_of_a_full_rosinality_generator_maps_to_our_generator(size):
  upstream = _rosinality_generator_shapes(size, 512, 8, _config_f_channels(size))
  G = stylegan2.Generator(size=size, style_dim=512, n_mlp=8)
  ours = jax.eval_shape(lambda: G.init(jax.random.PRNGKey(0), jnp.zeros((1, 512)), randomize_noise=False))
  check_key_map(convert.GENERATOR_KEYS, upstream, flat_shapes(ours), lambda key: key.endswith(".kernel"))


@pytest.mark.parametrize("size", [256, 1024])
def test_every_key_of_a_full_rosinality_discriminator_maps_to_our_discriminator(size):
  upstream = _rosinality_discriminator_shapes(size, _config_f_channels(size))
  D = stylegan2.Discriminator(size=size)
  ours = jax.eval_shape(lambda: D.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3))))
  check_key_map(convert.DISCRIMINATOR_KEYS, upstream, flat_shapes(ours), lambda key: key.endswith(".kernel"))


def test_key_maps_refuse_names_they_do_not_know():
  for bad in ("convs.3.conv.blur.weight", "style.1.kernel", "convs.01.conv.weight", "to_rgb1.upsample.kernel"):
    with pytest.raises(KeyError, match="no parameter"):
      convert.GENERATOR_KEYS.path(bad)
  with pytest.raises(KeyError, match="no upstream key"):
    convert.DISCRIMINATOR_KEYS.key(("params", "convs_1", "conv3", "conv", "weight"))


@pytest.mark.parametrize(
  "layout",
  [sdc.VECTOR, sdc.DENSE, sdc.CONV, sdc.MODCONV, sdc.NCHW, sdc.RGB_BIAS, sdc.DENSE_CHW4],
  ids=lambda layout: layout.name,
)
def test_layouts_move_values_and_invert_each_other(layout):
  shape = {1: (5,), 2: (3, 2 * 16), 4: (2, 3, 4, 5), 5: (1, 2, 3, 4, 4)}[layout.ndim]
  shape = (1, 3, 1, 1) if layout is sdc.RGB_BIAS else shape
  x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  np.testing.assert_array_equal(layout.to_upstream(layout.to_ours(x)), x)
  np.testing.assert_array_equal(layout.to_upstream(jnp.asarray(layout.to_ours(x))), x)


def test_dense_chw4_reads_the_features_our_discriminator_flattens():
  # Upstream flattens (C, 4, 4) maps NCHW, we flatten NHWC: the converted weight must give the same product.
  rng = np.random.default_rng(1)
  w, feats = rng.normal(size=(5, 3 * 16)), rng.normal(size=(2, 3, 4, 4))
  upstream = feats.reshape(2, -1) @ w.T
  ours = feats.transpose(0, 2, 3, 1).reshape(2, -1) @ sdc.DENSE_CHW4.to_ours(w)
  np.testing.assert_allclose(ours, upstream, rtol=1e-12)


def test_converters_accept_a_complete_rosinality_state_dict_and_nothing_less():
  ch = {4: 8, 8: 6, 16: 4}
  g_sd = {k: np.full(s, 0.5, np.float32) for k, s in _rosinality_generator_shapes(16, 8, 2, ch).items()}
  config, variables = convert.convert_generator(g_sd)
  assert (config["size"], config["style_dim"], config["n_mlp"], dict(config["channels"])) == (16, 8, 2, ch)
  assert set(variables["noises"]) == {f"noise_{i}" for i in range(5)}
  d_sd = {k: np.full(s, 0.5, np.float32) for k, s in _rosinality_discriminator_shapes(16, ch).items()}
  config, _ = convert.convert_discriminator(d_sd)
  assert (config["size"], dict(config["channels"])) == (16, ch)
  with pytest.raises(sdc.ConversionError, match=r"missing key 'convs.2.skip.1.weight'"):
    convert.convert_discriminator({k: v for k, v in d_sd.items() if k != "convs.2.skip.1.weight"})
  bad = dict(g_sd, **{"convs.1.conv.weight": np.zeros((1, 6, 5, 3, 3), np.float32)})
  with pytest.raises(
    sdc.ConversionError,
    match=r"'convs.1.conv.weight' has shape \(1, 6, 5, 3, 3\), "
    r"expected \(1, 6, 6, 3, 3\)",
  ):
    convert.convert_generator(bad)


def _tiny_state_dict():
  """A real rosinality-layout generator state dict, made by converting our own init backwards."""
  import jax

  from jaxgeal.models import stylegan2

  G = stylegan2.Generator(size=8, style_dim=4, n_mlp=1, channels=((4, 4), (8, 4)))
  v = G.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)), randomize_noise=False)
  p = jax.tree_util.tree_map(np.asarray, v["params"])
  sd = {
    "style.1.weight": p["style_1"]["weight"].T,
    "style.1.bias": p["style_1"]["bias"],
    "input.input": p["input"].transpose(0, 3, 1, 2),
  }

  def styled(prefix, q):
    sd[f"{prefix}.conv.weight"] = q["conv"]["weight"].transpose(3, 2, 0, 1)[None]
    sd[f"{prefix}.conv.modulation.weight"] = q["conv"]["modulation"]["weight"].T
    sd[f"{prefix}.conv.modulation.bias"] = q["conv"]["modulation"]["bias"]

  for name, prefix in [("conv1", "conv1"), ("convs_0", "convs.0"), ("convs_1", "convs.1")]:
    styled(prefix, p[name])
    sd[f"{prefix}.noise.weight"] = p[name]["noise"]["weight"]
    sd[f"{prefix}.activate.bias"] = p[name]["activate"]["bias"]
  for name, prefix in [("to_rgb1", "to_rgb1"), ("to_rgbs_0", "to_rgbs.0")]:
    styled(prefix, p[name])
    sd[f"{prefix}.bias"] = p[name]["bias"].reshape(1, 3, 1, 1)
  for i, n in enumerate(v["noises"].values()):
    sd[f"noises.noise_{i}"] = np.asarray(n).transpose(0, 3, 1, 2)
  return G, v, sd


def test_conversion_inverts_the_upstream_layout_exactly():
  G, v, sd = _tiny_state_dict()
  config, variables = convert.convert_generator(sd)
  assert config["size"] == 8 and config["channels"] == [(4, 4), (8, 4)]
  z = jnp.ones((2, 4))
  np.testing.assert_array_equal(
    G.apply(v, z, randomize_noise=False),
    stylegan2.generator_from_config(config).apply(variables, z, randomize_noise=False),
  )


def test_missing_and_unknown_keys_are_refused_by_name():
  _, _, sd = _tiny_state_dict()
  broken = dict(sd)
  del broken["convs.1.activate.bias"]
  with pytest.raises(sdc.ConversionError, match=r"missing key 'convs.1.activate.bias'"):
    convert.convert_generator(broken)
  with pytest.raises(sdc.ConversionError, match="not understood.*mystery.weight"):
    convert.convert_generator({**sd, "mystery.weight": np.zeros(3)})
  with pytest.raises(sdc.ConversionError, match="no StyleGAN2 weights"):
    convert.convert_checkpoint({"t_ema": {}})


@pytest.mark.parity
@pytest.mark.parametrize("fx", fixtures.collect("stylegan2_d"))
def test_convert_and_sample_clis_round_trip(fx, tmp_path, capsys):
  src = fx.resolve(fx.checkpoint_file())
  out = tmp_path / "model"
  assert convert_cli.main(["stylegan2", str(src), str(out)]) == 0
  models = checkpoint.load_models(out)
  stored = fx.meta["checkpoints"][fx.checkpoint_file()]["keys"]
  assert {n: m[0] for n, m in models.items()} == {n: "discriminator" if n == "d" else "generator" for n in stored}
  # The saved generator reproduces the upstream image: g_ema is the stylegan2_g fixture's generator of the same
  # directory (README).
  g_json = fx.dir / "stylegan2_g.json"
  if g_json.exists():
    g_fx = fixtures.Fixture(g_json, fixtures.fixture_root())
    _, config, variables = checkpoint.load_model(out, "g_ema")
    img = stylegan2.generator_from_config(config).apply(variables, jnp.asarray(g_fx["z"]), randomize_noise=False)
    assert_close(img, nchw_to_nhwc(g_fx["img_z"]), 1e-4, "img_z after Orbax round trip")
  # An existing directory is not overwritten by accident.
  assert convert_cli.main(["stylegan2", str(src), str(out)]) == 2
  assert "already holds a model" in capsys.readouterr().err
  grid = tmp_path / "grid.png"
  assert (
    sample_cli.main(
      ["--checkpoint", str(out), "--seeds", "0-4", "--truncation", "0.7", "--n_mean", "64", "--out", str(grid)]
    )
    == 0
  )
  size = models["g_ema"][1]["size"]
  im = Image.open(grid)
  assert im.size == (3 * (size + 2) + 2, 2 * (size + 2) + 2)  # 5 images, 3 per row
  assert np.asarray(im).std() > 0


def test_sample_seeds_are_stable_across_batches(tmp_path):
  G, v, sd = _tiny_state_dict()
  config, variables = convert.convert_generator(sd)
  checkpoint.save_models(tmp_path / "m", {"g_ema": ("generator", config, variables)})
  a = sample_cli.sample(tmp_path / "m", [3, 4, 5], batch_size=2, noise_mode="random")
  b = sample_cli.sample(tmp_path / "m", [5], batch_size=1, noise_mode="random")
  np.testing.assert_allclose(a[2], b[0], atol=1e-5)


def test_cli_errors_name_the_bad_input(tmp_path, capsys):
  assert convert_cli.main(["stylegan2", str(tmp_path / "nope.pt"), str(tmp_path / "o")]) == 2
  assert "nope.pt" in capsys.readouterr().err
  assert sample_cli.main(["--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "g.png")]) == 2
  err = capsys.readouterr().err
  assert "missing" in err and "python -m jaxgeal.convert" in err
  assert sample_cli.main(["--checkpoint", str(tmp_path), "--truncation", "1.5"]) == 2
  assert sample_cli.parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
  with pytest.raises(ValueError, match="cannot read"):
    sample_cli.parse_seeds("a-b")
