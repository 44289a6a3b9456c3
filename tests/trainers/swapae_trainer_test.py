"""Swapping Autoencoder trainer: steps alternate a D and a G iteration with R1 on its lazy schedule and export a
model directory, a killed run resumes exactly, 8 fake CPU devices as a 2 x 4 FSDP mesh give the steps of 1,
init_from starts from a converted upstream checkpoint, and the configs carry upstream's launcher settings."""

import json
import pathlib

import jax
import numpy as np
import pytest

from jaxgeal import checkpoint
from jaxgeal.convert import swapae as convert
from jaxgeal.trainers import config_checks, config_variants
from jaxgeal.trainers import swapae as trainer
from tests import fixtures
from tests.trainers import multidevice, stopped_runs

REPO = pathlib.Path(__file__).resolve().parents[2]
NETS = ("E", "G", "D", "Dpatch")


def tiny_config(steps=4, num_devices=1):
  c = config_variants.load_config(f"{REPO / 'configs' / 'swapae_church.py'}:tiny")
  c.total_images = steps * 2 * c.batch_size
  c.num_devices = num_devices
  c.log_every = 1  # block on every step: concurrent collectives can deadlock on 2 cores
  return c


def fake_data(first_batch, batch=8, size=32):
  """Deterministic 'real' images for batch b (so a resumed run sees what an uninterrupted one saw)."""
  b = first_batch
  while True:
    rng = np.random.default_rng(b)
    yield {"image": np.tanh(rng.standard_normal((batch, size, size, 3))).astype(np.float32)}
    b += 1


def _metrics(workdir):
  return [json.loads(line) for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def _leaves(state) -> list[np.ndarray]:
  """E, G, D and Dpatch's parameters, in one fixed order."""
  return [np.asarray(x) for name in NETS for x in jax.tree_util.tree_leaves(getattr(state, name))]


def _assert_trees_equal(a, b):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  """An uninterrupted 4-step run: (final state, its work directory)."""
  workdir = tmp_path_factory.mktemp("full")
  return trainer.train_and_evaluate(tiny_config(4), str(workdir), data=fake_data), workdir


def test_steps_alternate_d_and_g_with_lazy_r1_and_export_a_model(full_run):
  state, tmp_path = full_run
  assert int(state.step) == 4
  rows = _metrics(tmp_path)
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  # R1 every 2nd D iteration (upstream counts D iterations from 1): steps 2 and 4 carry it.
  assert ["D_R1" in r for r in rows] == [False, True, False, True]
  for key in ("D_real", "D_rec", "D_mix", "PatchD_real", "PatchD_mix", "D_total", "G_L1", "G_GAN_rec", "G_GAN_mix"):
    assert all(key in r for r in rows), key
  assert all(np.isfinite(v) for r in rows for k, v in r.items() if k != "time")
  assert rows[0]["D_total"] == pytest.approx(
    sum(rows[0][k] for k in ("D_real", "D_rec", "D_mix", "PatchD_real", "PatchD_mix"))
  )
  saved = checkpoint.load_models(tmp_path / "model")
  assert {name: saved[name][0] for name in NETS} == trainer.KINDS
  for name in NETS:
    _assert_trees_equal(saved[name][2]["params"], getattr(state, name))
  assert saved["E"][1]["image_size"] == 32 and saved["E"][1]["options"]["patch_size"] == 16
  assert {"reconstruction_0000004.png", "swap_grid_0000004.png"} <= {p.name for p in (tmp_path / "visuals").iterdir()}


def test_killed_run_resumes_exactly(full_run, tmp_path):
  full, full_dir = full_run
  part = stopped_runs.stopped_after(full_dir, 2, tmp_path / "part")  # as a run killed after step 2 leaves it
  resumed = trainer.train_and_evaluate(tiny_config(4), str(part), data=fake_data)
  for name in NETS + ("g_opt", "d_opt"):
    _assert_trees_equal(getattr(full, name), getattr(resumed, name))
  losses = lambda workdir: {k: v for k, v in _metrics(workdir)[-1].items() if k not in ("time", "steps_per_s")}
  assert losses(full_dir) == losses(tmp_path / "part")


MULTI_DEVICE = """
import numpy as np
from tests.trainers.multidevice import shard_shapes
from tests.trainers.swapae_trainer_test import NETS, tiny_config, fake_data, _leaves, _metrics
from jaxgeal.trainers import swapae as trainer
c = tiny_config(4, num_devices=8)
c.mesh.update(fsdp=4, min_shard_size=0)  # a 2 x 4 (data x fsdp) mesh; tiny tensors: shard every one the rule allows
c.vis_every = 0  # visuals do not change the state; they would only add compilations
state = trainer.train_and_evaluate(c, sys.argv[1] + "/fsdp", data=fake_data)
np.savez(sys.argv[1] + "/fsdp.npz", *_leaves(state))
shards = shard_shapes({k: getattr(state, k) for k in NETS + ("g_opt", "d_opt")})
print(json.dumps({"rows": _metrics(sys.argv[1] + "/fsdp"), "shards": shards}))
"""


@pytest.mark.slow
def test_a_2x4_fsdp_mesh_gives_the_steps_of_one_device(full_run, tmp_path):
  """The 4 steps of the uninterrupted run (batch 8, R1 on steps 2 and 4) on 8 fake devices as a 2 x 4 (data x
  fsdp) mesh, one image and half a swap group each, give its losses and its final E, G, D, Dpatch, with a quarter
  of each split weight and its Adam moments per device. (The 1-device run is this process's own: a program
  compiled under 8 devices is cached apart from the same program under 1. Data parallelism alone over several
  devices: tests/trainers/cluster_classifier_test.py, tests/multiprocess_test.py.)"""
  one, one_dir = full_run
  out = multidevice.run_with_fake_devices(MULTI_DEVICE, tmp_path, num_devices=8)
  rows = out["rows"]
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  for r1, rf in zip(_metrics(one_dir), rows, strict=True):
    assert rf.keys() == r1.keys()
    for k in sorted(set(r1) - {"time", "steps_per_s", "step"}):
      np.testing.assert_allclose(rf[k], r1[k], rtol=1e-4, atol=1e-5, err_msg=f"step {r1['step']} {k}")
  leaves = _leaves(one)
  saved = np.load(tmp_path / "fsdp.npz")
  assert len(saved.files) == len(leaves) > 0
  for i, leaf in enumerate(leaves):
    np.testing.assert_allclose(saved[f"arr_{i}"], leaf, rtol=1e-4, atol=1e-5, err_msg=f"leaf {i}")
  assert multidevice.assert_fsdp_split(out["shards"], 4) > len(out["shards"]) // 3
  for net in NETS:
    opt = "g_opt" if net in ("E", "G") else "d_opt"
    multidevice.assert_moments_split_as_parameters(out["shards"], net, f"['{opt}'][0].{{}}['{net}']")


@pytest.mark.parity
@pytest.mark.parametrize("fx", fixtures.collect("swapae"), ids=str)
def test_init_from_a_converted_upstream_checkpoint(fx, tmp_path):
  """Options named as upstream's: the fixture's opt as config.model builds the converted networks' shapes."""
  opt = fx.meta["constructor"]["opt"]
  models = convert.convert_state_dict(fixtures.load_checkpoint(fx, fx.checkpoint_file()), opt)
  checkpoint.save_models(tmp_path / "upstream", models)
  cfg = models["E"][1]
  config = trainer.base_config()
  config.model.update({k: opt[k] for k in config.model if k in opt})
  config.model.update(
    netD_max_nc=dict(cfg["discriminator"]["channels"])[4],
    netPatchD_pair_widths=tuple(cfg["patch_discriminator"]["pair_widths"]),
  )
  config.init_from = str(tmp_path / "upstream")
  m = trainer.build_models(config)
  state = trainer.init_state(m, config, *trainer.make_optimizers(config))
  for name in NETS:
    _assert_trees_equal(getattr(state, name), models[name][2]["params"])
  config.model.global_code_ch = 2 * opt["global_code_ch"]
  with pytest.raises(ValueError, match=r"init_from=.*has shape .*config.model"):
    trainer.init_state(trainer.build_models(config), config, *trainer.make_optimizers(config))


LAUNCHERS = {  # upstream experiments/<name>_launcher.py: crop size, batch, GPUs, aggregation, patch R1
  "swapae_church.py": (256, 16, 4, False, 1.0),
  "swapae_bedroom.py": (256, 32, 8, False, 1.0),
  "swapae_ffhq.py": (512, 16, 8, True, 1.0),
  "swapae_mountain.py": (512, 16, 8, True, 10.0),
}


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_configs_carry_the_launchers_settings_and_have_a_tiny_variant(name):
  c = config_variants.load_config(REPO / "configs" / name)
  size, batch, gpus, aggregation, patch_r1 = LAUNCHERS[name]
  assert c.trainer == "swapae" and c.data.source == ""
  assert (c.model.crop_size, c.data.size, c.batch_size, c.group_size) == (size, size, batch, batch // gpus)
  assert (c.loss.patch_use_aggregation, c.loss.lambda_patch_R1) == (aggregation, patch_r1)
  assert (c.model.spatial_code_ch, c.model.global_code_ch, c.model.patch_size, c.loss.patch_num_crops) == (
    8,
    2048,
    128,
    8,
  )
  assert (c.total_images, c.optim.lr, c.optim.beta1, c.optim.beta2, c.optim.R1_once_every) == (25e6, 0.002, 0, 0.99, 16)
  config_checks.validate(c, available_devices=8)
  tiny = config_variants.load_config(f"{REPO / 'configs' / name}:tiny")
  config_checks.validate(tiny, available_devices=1)
  assert tiny.model.crop_size == 32 and trainer.total_steps(tiny) <= 8


def test_paper_networks_have_upstreams_widths():
  """At 256 px the paper's encoder widths run 32 ... 2048 (nc(i) = 2^(5+i)), the generator's 512 ... 128."""
  c = config_variants.load_config(REPO / "configs" / "swapae_church.py")
  mc = trainer.model_config(c)
  assert mc["encoder"]["widths"] == [32, 64, 128, 256, 512, 1024, 2048]
  assert mc["generator"]["head_widths"] == [256, 512] and mc["generator"]["up_widths"] == [512, 512, 256, 128]
  assert dict(mc["patch_discriminator"]["channels"]) == {4: 384, 8: 384, 16: 256, 32: 128, 64: 64, 128: 32}
  shapes = jax.eval_shape(lambda: trainer.init_state(trainer.build_models(c), c, *trainer.make_optimizers(c)))
  assert shapes.E["ToGlobalCode"]["weight"].shape[-1] == 2048


@pytest.mark.parametrize(
  "override,message",
  [
    (dict(group_size=3, micro_batch_size=3, batch_size=3), "group_size=3: must be a multiple of 2"),
    (dict(micro_batch_size=6), "batch_size=8: must be a multiple of config.micro_batch_size"),
    (dict(group_size=4, micro_batch_size=2), "micro_batch_size=2: must be a multiple of config.group_size"),
    ({"model.patch_size": 64}, "patch_size=64: must be at most model.crop_size"),
    ({"model.crop_size": 8, "data.size": 8}, "crop_size=8: too small for the encoder"),
    ({"model.crop_size": 48, "data.size": 48}, "crop_size=48: must be a power of two"),
    ({"data.size": 64}, "data.size=64: must equal model.crop_size"),
    ({"loss.patch_min_scale": 0.5, "loss.patch_max_scale": 0.25}, "must satisfy 0 < min <= max <= 1"),
  ],
)
def test_bad_configs_are_one_clear_error(override, message):
  c = tiny_config()
  for path, value in override.items():
    *parents, leaf = path.split(".")
    node = c
    for p in parents:
      node = node[p]
    node[leaf] = value
  with pytest.raises(config_checks.ConfigError, match=message):
    config_checks.validate(c, available_devices=1)
