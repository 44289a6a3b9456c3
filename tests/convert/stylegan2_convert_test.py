"""StyleGAN2 converter and CLIs: architecture read from shapes, strict key handling, and the documented
round trip `python -m jaxgeal.convert stylegan2 SRC.pt OUT` -> `python -m jaxgeal.sample`."""
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxgeal import checkpoint
from jaxgeal import sample as sample_cli
from jaxgeal.convert import __main__ as convert_cli
from jaxgeal.convert import state_dict as sdc
from jaxgeal.convert import stylegan2 as convert
from tests import fixtures
from tests.fixtures import assert_close, nchw_to_nhwc


@pytest.mark.parity
@pytest.mark.parametrize("fx", fixtures.collect("stylegan2_g"))
def test_generator_architecture_is_read_from_the_checkpoint_shapes(fx):
  config = convert.generator_config(fixtures.load_checkpoint(fx, fx.kind + ".pt")["g_ema"])
  args = fx.meta["constructor"]["args"]
  assert (config["size"], config["style_dim"], config["n_mlp"]) == (args["size"], args["style_dim"],
                                                                   args["n_mlp"])
  assert {str(r): c for r, c in config["channels"]} == fx.meta["constructor"]["channels_override"]


@pytest.mark.parity
@pytest.mark.parametrize("fx", fixtures.collect("stylegan2_d"))
def test_discriminator_architecture_is_read_from_the_checkpoint_shapes(fx):
  config = convert.discriminator_config(fixtures.load_checkpoint(fx, fx.kind + ".pt")["d"])
  assert config["size"] == fx.meta["constructor"]["args"]["size"]
  assert {str(r): c for r, c in config["channels"]} == fx.meta["constructor"]["effective_channels"]


def _tiny_state_dict():
  """A real rosinality-layout generator state dict, made by converting our own init backwards."""
  import jax
  from jaxgeal.models import stylegan2
  G = stylegan2.Generator(size=8, style_dim=4, n_mlp=1, channels=((4, 4), (8, 4)))
  v = G.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)), randomize_noise=False)
  p = jax.tree_util.tree_map(np.asarray, v["params"])
  sd = {"style.1.weight": p["style_1"]["weight"].T, "style.1.bias": p["style_1"]["bias"],
        "input.input": p["input"].transpose(0, 3, 1, 2)}
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
  np.testing.assert_array_equal(G.apply(v, z, randomize_noise=False),
                                convert.build_generator(config).apply(variables, z, randomize_noise=False))


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
  src = fx.resolve(fx.kind + ".pt")
  out = tmp_path / "model"
  assert convert_cli.main(["stylegan2", str(src), str(out)]) == 0
  models = checkpoint.load_models(out)
  assert {n: m[0] for n, m in models.items()} == {"g_ema": "generator", "g": "generator",
                                                   "d": "discriminator"}
  # The saved generator reproduces the upstream image (same g_ema as stylegan2_g).
  g_fx = next((f.values[0] for f in fixtures.collect("stylegan2_g") if f.values[0] is not None), None)
  if g_fx is not None:
    _, config, variables = checkpoint.load_model(out, "g_ema")
    img = convert.build_generator(config).apply(variables, jnp.asarray(g_fx["z"]), randomize_noise=False)
    assert_close(img, nchw_to_nhwc(g_fx["img_z"]), 1e-4, "img_z after Orbax round trip")
  # An existing directory is not overwritten by accident.
  assert convert_cli.main(["stylegan2", str(src), str(out)]) == 2
  assert "already holds a model" in capsys.readouterr().err
  grid = tmp_path / "grid.png"
  assert sample_cli.main(["--checkpoint", str(out), "--seeds", "0-4", "--truncation", "0.7",
                          "--n-mean", "64", "--out", str(grid)]) == 0
  size = models["g_ema"][1]["size"]
  im = Image.open(grid)
  assert im.size == (3 * (size + 2) + 2, 2 * (size + 2) + 2)   # 5 images, 3 per row
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
