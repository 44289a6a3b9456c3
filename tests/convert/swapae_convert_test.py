"""`python -m jaxgeal.convert swapae CHECKPOINT.pth OUT_DIR`: the upstream fixture checkpoint round-trips through a
model directory to the recorded codes and reconstruction; test-time checkpoints give E and G only; upstream's
opt.txt / opt.pkl beside the checkpoint are read (and a crafted opt.pkl is refused); a truncated or foreign
checkpoint is one line and exit 2."""

from __future__ import annotations

import argparse
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgeal import checkpoint
from jaxgeal.convert import __main__ as convert_cli
from jaxgeal.convert import swapae as convert
from jaxgeal.models import swapae
from tests import fixtures
from tests.convert.torch_writers import Storage, contiguous, write_zip
from tests.fixtures import assert_close, nchw_to_nhwc

ATOL = 1e-4  # as tests/models/swapae_test.py
FIXTURES = fixtures.collect("swapae")


def _write_state_dict(path, sd: dict) -> None:
  """A torch-format checkpoint of {key: array} (what `torch.save(model.state_dict())` writes), without torch."""
  types = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage"}
  tensors = {}
  for i, (key, value) in enumerate(sd.items()):
    value = np.ascontiguousarray(value)
    tensors[key] = contiguous(Storage(str(i), value, types[value.dtype]), value.shape)
  write_zip(path, tensors)


def _convert(argv, capsys) -> tuple[int, str, str]:
  rc = convert_cli.main(["swapae", *map(str, argv)])
  out = capsys.readouterr()
  return rc, out.out, out.err


def _noise(fx, G: swapae.Generator) -> list:
  """The fixture's recorded noise maps in our generator's noise-layer order (matched by upstream module name)."""
  by_module = {module: fx[name] for name, module in fx.meta["noise_layers"].items()}
  return [jnp.asarray(nchw_to_nhwc(by_module[f"G.{m}"])) for m, _ in G.noise_layers()]


@pytest.mark.parity
@pytest.mark.parametrize("fx", FIXTURES)
def test_converted_model_directory_reproduces_the_recorded_codes_and_reconstruction(fx, tmp_path, capsys):
  src = fx.resolve(fx.checkpoint_file())
  rc, out, err = _convert([src, tmp_path / "model"], capsys)
  assert rc == 0, err
  assert "architecture inferred from tensor shapes" in out
  models = checkpoint.load_models(tmp_path / "model")
  assert {n: k for n, (k, _, _) in models.items()} == {
    "E": "swapae_encoder",
    "G": "swapae_generator",
    "D": "swapae_discriminator",
    "Dpatch": "swapae_patch_discriminator",
  }
  for name in models:
    assert f"{name}: {models[name][0]} (" in out
  config = models["E"][1]
  assert config["image_size"] == fx.meta["arrays"]["real"]["shape"][-1]
  E, G = swapae.encoder_from_config(config), swapae.generator_from_config(config)
  real = jnp.asarray(nchw_to_nhwc(fx["real"]))
  s, t = jax.jit(E.apply)(models["E"][2], real)
  assert_close(s, nchw_to_nhwc(fx["structure_code"]), ATOL, "structure_code")
  assert_close(t, fx["texture_code"], ATOL, "texture_code")
  rec = jax.jit(G.apply)(models["G"][2], s, t, _noise(fx, G))
  assert_close(rec, nchw_to_nhwc(fx["rec"]), ATOL, "rec")


@pytest.fixture(scope="module")
def state_dict(request):
  """The fixture checkpoint's {key: array} (skips where the fixtures are absent)."""
  fx = FIXTURES[0].values[0]
  if fx is None:
    pytest.skip("swapae fixture absent")
  return fixtures.load_checkpoint(fx, fx.checkpoint_file())


@pytest.mark.parity
def test_a_test_time_checkpoint_without_discriminators_converts_encoder_and_generator(state_dict, tmp_path, capsys):
  src = tmp_path / "latest_net.pth"
  _write_state_dict(src, {k: v for k, v in state_dict.items() if not k.startswith(("D.", "Dpatch."))})
  rc, out, err = _convert([src, tmp_path / "model"], capsys)
  assert rc == 0, err
  models = checkpoint.load_models(tmp_path / "model")
  assert sorted(models) == ["E", "G"]
  assert "D:" not in out and "Dpatch:" not in out
  full = convert.convert_state_dict(state_dict)
  for name in ("E", "G"):
    jax.tree_util.tree_map(np.testing.assert_array_equal, models[name][2], full[name][2])
  # Without D nor opt.txt nothing says the training size.
  assert models["E"][1]["image_size"] is None


def _opt_txt(options: dict, defaults: dict) -> str:
  """upstream BaseOptions.save_options' text: `{name:>25}: {value:<30}` + `\\t[default: d]` where it differs."""
  lines = []
  for k, v in sorted(options.items()):
    comment = f"\t[default: {defaults[k]}]" if k in defaults and defaults[k] != v else ""
    lines.append(f"{k:>25}: {v!s:<30}{comment}\n")
  return "".join(lines)


@pytest.mark.parity
def test_opt_txt_beside_the_checkpoint_adds_the_training_options(state_dict, tmp_path, capsys):
  src = tmp_path / "run" / "10k_checkpoint.pth"
  src.parent.mkdir()
  _write_state_dict(src, {k: v for k, v in state_dict.items() if not k.startswith(("D.", "Dpatch."))})
  opts = {"crop_size": 64, "netG_use_noise": False, "lambda_L1": 2.5, "dataroot": "/data/church", "name": "church"}
  (src.parent / "opt.txt").write_text(_opt_txt(opts, {"crop_size": 256, "lambda_L1": 1.0, "netG_use_noise": True}))
  assert (
    "             crop_size: 64                            \t[default: 256]\n" in (src.parent / "opt.txt").read_text()
  )
  rc, out, err = _convert([src, tmp_path / "model"], capsys)
  assert rc == 0, err
  assert f"options: {src.parent / 'opt.txt'}" in out
  config = checkpoint.load_models(tmp_path / "model")["G"][1]
  assert config["image_size"] == 64 and config["generator"]["use_noise"] is False
  # Training options are kept, the old run's paths are not.
  assert config["options"] == {"crop_size": 64, "netG_use_noise": False, "lambda_L1": 2.5}


@pytest.mark.parametrize("form", ["namespace", "dict"])
def test_opt_pkl_holds_a_namespace_or_a_dict_of_options(tmp_path, form):
  opts = {"crop_size": 128, "patch_size": 64, "netG_use_noise": True, "gpu_ids": [0, 1], "name": "x"}
  obj = argparse.Namespace(**opts) if form == "namespace" else dict(opts)
  (tmp_path / "opt.pkl").write_bytes(pickle.dumps(obj))
  got, path = convert.find_options(tmp_path / "latest_checkpoint.pth")
  assert path == tmp_path / "opt.pkl" and got == opts


def test_opt_txt_is_preferred_to_opt_pkl(tmp_path):
  (tmp_path / "opt.txt").write_text(_opt_txt({"crop_size": 32}, {}))
  (tmp_path / "opt.pkl").write_bytes(pickle.dumps(argparse.Namespace(crop_size=64)))
  assert convert.find_options(tmp_path / "c.pth") == ({"crop_size": 32}, tmp_path / "opt.txt")


class _RunsCode:
  """Unpickles as os.system('touch MARKER')."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize(
  "payload",
  [
    lambda marker: argparse.Namespace(crop_size=64, evil=_RunsCode(marker)),
    lambda marker: {"crop_size": 64, "evil": _RunsCode(marker)},
    lambda marker: _RunsCode(marker),
    lambda marker: [1, 2],
  ],
  ids=["in-namespace", "in-dict", "bare", "list"],
)
def test_a_crafted_opt_pkl_is_refused_in_one_line_without_running_anything(tmp_path, capsys, payload):
  marker = tmp_path / "ran"
  (tmp_path / "opt.pkl").write_bytes(pickle.dumps(payload(marker)))
  (tmp_path / "ckpt.pth").write_bytes(b"never read")
  rc, out, err = _convert([tmp_path / "ckpt.pth", tmp_path / "model"], capsys)
  assert rc == 2 and not marker.exists()
  assert err.startswith("error: ") and err.count("\n") == 1 and "opt.pkl" in err, err
  assert "cannot read upstream options" in err
  assert not (tmp_path / "model").exists()


@pytest.mark.parity
def test_a_truncated_checkpoint_is_one_line_and_exit_2(tmp_path, capsys):
  fx = FIXTURES[0].values[0]
  if fx is None:
    pytest.skip("swapae fixture absent")
  data = fx.resolve(fx.checkpoint_file()).read_bytes()
  src = tmp_path / "cut.pth"
  src.write_bytes(data[: len(data) // 2])
  rc, out, err = _convert([src, tmp_path / "model"], capsys)
  assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and str(src) in err, err
  assert "truncated" in err
  assert not (tmp_path / "model" / "model.json").exists()


@pytest.mark.parity
@pytest.mark.parametrize("name", ["stylegan2_g.pt", "stn.pt"])
def test_a_checkpoint_of_another_model_is_one_line_and_exit_2(tmp_path, capsys, name):
  src = fixtures.fixture_root() / name
  if not src.is_file():
    pytest.skip(f"{src} absent")
  rc, out, err = _convert([src, tmp_path / "model"], capsys)
  assert rc == 2 and err.count("\n") == 1, err
  assert "not a Swapping Autoencoder checkpoint" in err
  assert not (tmp_path / "model").exists()


def test_a_pickle_that_is_not_a_state_dict_is_one_line_and_exit_2(tmp_path, capsys):
  src = tmp_path / "list.pth"
  write_zip(src, [1, 2, 3])
  rc, out, err = _convert([src, tmp_path / "model"], capsys)
  assert rc == 2 and err.count("\n") == 1 and "holds a list" in err, err
