"""Perceptual-loss converter (jaxgeal.convert.lpips) and its CLI: strict keys, both VGG layouts, round trip
`python -m jaxgeal.convert lpips ...` -> `load_perceptual_loss`."""

import functools

import jax
import numpy as np
import pytest

from jaxgeal import checkpoint
from jaxgeal.convert import __main__ as convert_cli
from jaxgeal.convert import lpips as convert
from jaxgeal.convert import state_dict as sdc
from jaxgeal.models import lpips
from tests import fixtures


@functools.cache
def _vgg_features_sd() -> dict:
  """A `features` state dict with the right shapes (zeros, small values: only keys and layouts matter)."""
  sd, in_ch = {}, 3
  for i, c in zip(lpips.CONV_INDICES, lpips.CONV_CHANNELS):
    sd[f"{i}.weight"] = np.zeros((c, in_ch, 3, 3), np.float32)
    sd[f"{i}.bias"] = np.full((c,), i, np.float32)
    in_ch = c
  sd["0.weight"] = np.arange(64 * 27, dtype=np.float32).reshape(64, 3, 3, 3)  # To check the OIHW -> HWIO.
  return sd


def _lin_sd() -> dict:
  return {f"lin{k}.model.1.weight": np.full((1, c, 1, 1), k, np.float32) for k, c in enumerate(lpips.CHANNELS)}


def test_vgg_layouts_convert_to_the_same_params():
  features = _vgg_features_sd()
  torchvision = {f"features.{k}": v for k, v in features.items()}
  torchvision.update({"classifier.0.weight": np.zeros((8, 4), np.float32), "classifier.6.bias": np.zeros(8)})
  a, b = convert.convert_vgg16(features), convert.convert_vgg16(torchvision)
  assert sorted(a) == sorted(f"features_{i}" for i in lpips.CONV_INDICES)
  jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
  np.testing.assert_array_equal(a["features_0"]["weight"], np.transpose(features["0.weight"], (2, 3, 1, 0)))
  np.testing.assert_array_equal(a["features_28"]["bias"], features["28.bias"])
  lin = convert.convert_linear(_lin_sd())
  assert [lin[f"lin{k}"]["weight"].shape for k in range(5)] == [(c,) for c in lpips.CHANNELS]
  name, config, variables = convert.convert(features, _lin_sd())
  assert (name, config) == ("lpips", {"lpips": True}) and set(variables["params"]) == {"net", *lin}
  name, config, variables = convert.convert(features)
  assert (name, config) == ("vgg_ssl", {"lpips": False}) and set(variables["params"]) == {"net"}


@pytest.mark.parametrize(
  "edit, match",
  [
    (lambda sd: sd.pop("28.bias"), "missing key '28.bias'"),
    (lambda sd: sd.update({"30.weight": np.zeros((4, 4, 3, 3), np.float32)}), "not understood.*30.weight"),
    (lambda sd: sd.update({"1.running_mean": np.zeros(64, np.float32)}), "not understood.*running_mean"),
    (lambda sd: sd.update({"5.weight": np.zeros((128, 32, 3, 3), np.float32)}), "conv 5 has weight"),
  ],
  ids=["missing", "vgg19-extra-conv", "batchnorm", "wrong-shape"],
)
def test_vgg_converter_refuses_missing_unknown_and_misshapen_keys(edit, match):
  sd = dict(_vgg_features_sd())
  edit(sd)
  with pytest.raises(sdc.ConversionError, match=match):
    convert.convert_vgg16(sd)


def test_torchvision_layout_refuses_keys_outside_features_and_classifier():
  sd = {f"features.{k}": v for k, v in _vgg_features_sd().items()}
  sd["avgpool.weight"] = np.zeros(1, np.float32)
  with pytest.raises(sdc.ConversionError, match="avgpool.weight"):
    convert.convert_vgg16(sd)


@pytest.mark.parametrize(
  "edit, match",
  [
    (lambda sd: sd.pop("lin4.model.1.weight"), "missing key 'lin4.model.1.weight'"),
    (lambda sd: sd.update({"lin5.model.1.weight": np.zeros((1, 8, 1, 1), np.float32)}), "not understood"),
    (lambda sd: sd.update({"net.slice1.0.weight": np.zeros((64, 3, 3, 3), np.float32)}), "not understood"),
    (lambda sd: sd.update({"lin1.model.1.weight": np.zeros((1, 192, 1, 1), np.float32)}), r"\(1, 128, 1, 1\)"),
  ],
  ids=["missing", "extra-head", "full-lpips-state-dict", "alexnet-shape"],
)
def test_linear_converter_refuses_missing_unknown_and_misshapen_keys(edit, match):
  sd = _lin_sd()
  edit(sd)
  with pytest.raises(sdc.ConversionError, match=match):
    convert.convert_linear(sd)


def test_swapped_files_are_refused():
  with pytest.raises(sdc.ConversionError, match="missing key '0.weight'"):
    convert.convert_vgg16(_lin_sd())
  with pytest.raises(sdc.ConversionError, match="missing key 'lin0.model.1.weight'"):
    convert.convert_linear(_vgg_features_sd())
  with pytest.raises(sdc.ConversionError, match="flat state dict"):
    convert.convert_vgg16({"g_ema": {"x": np.zeros(1)}})


@pytest.mark.parity
@pytest.mark.parametrize("fx", fixtures.collect("lpips"))
def test_cli_round_trip_with_the_upstream_files(fx, tmp_path, capsys):
  metas = fx.meta["checkpoints"].values()
  lin_file = next(c["file"] for c in metas if all(k.startswith("lin") for k in c["keys"]))
  vgg_file = next(c["file"] for c in metas if c["file"] != lin_file)
  vgg, lin = fx.resolve(vgg_file), fx.resolve(lin_file)
  assert convert_cli.main(["lpips", str(vgg), str(tmp_path / "lpips"), "--lin", str(lin)]) == 0
  assert convert_cli.main(["lpips", str(vgg), str(tmp_path / "vgg_ssl")]) == 0
  assert "wrote" in capsys.readouterr().out
  for kind in ("lpips", "vgg_ssl"):
    loss = lpips.load_perceptual_loss(kind, weights_dir=tmp_path)
    assert loss.kind == kind and loss.scale == lpips.LOSS_SCALES[kind]
    assert loss.module.lpips == (kind == "lpips")
    direct = convert.convert(
      fixtures.load_checkpoint(fx, vgg_file), fixtures.load_checkpoint(fx, lin_file) if kind == "lpips" else None
    )[2]
    jax.tree_util.tree_map(np.testing.assert_array_equal, loss.variables, direct)
  # An existing directory is kept unless --overwrite; a missing source is a clean error.
  assert convert_cli.main(["lpips", str(vgg), str(tmp_path / "vgg_ssl")]) == 2
  assert "already holds a model" in capsys.readouterr().err
  assert convert_cli.main(["lpips", str(tmp_path / "absent.pt"), str(tmp_path / "x")]) == 2
  assert "absent.pt" in capsys.readouterr().err


def test_loader_refuses_a_directory_holding_the_other_variant(tmp_path):
  _, config, variables = convert.convert(_vgg_features_sd())
  checkpoint.save_models(tmp_path / "lpips", {"vgg_ssl": (lpips.MODEL_KIND, config, variables)})
  with pytest.raises(FileNotFoundError, match=r"holds \['vgg_ssl'\].*\n.*python -m jaxgeal.convert lpips"):
    lpips.load_perceptual_loss("lpips", weights_dir=tmp_path)
