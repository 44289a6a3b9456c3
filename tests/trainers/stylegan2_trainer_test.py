"""StyleGAN2 trainer: a few steps run with finite losses and regularisers on their lazy schedule, 8 fake CPU
devices as a 2 x 4 FSDP mesh give the same losses as 1, a killed run resumes exactly, and init_from starts from
a saved model."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags

from jaxgeal import checkpoint, main
from jaxgeal.trainers import config_checks
from jaxgeal.trainers import stylegan2 as trainer
from tests.trainers import multidevice, stopped_runs

REPO = pathlib.Path(__file__).resolve().parents[2]


def tiny_config(total_steps=4, num_devices=1):
  c = trainer.base_config()
  c.model.update(size=16, style_dim=16, n_mlp=2, channels=((4, 16), (8, 16), (16, 8)))
  c.optim.update(d_reg_every=2, g_reg_every=2)
  c.batch_size = 8
  c.num_devices = num_devices
  c.total_steps = total_steps
  c.log_every = 1  # block on every step: concurrent collectives can deadlock on 2 cores
  c.vis_every = 0
  c.ckpt_every = 2
  c.n_vis = 4
  return c


def fake_data(start_step, batch=8, size=16):
  """Deterministic 'real' images for step s (so a resumed run sees what an uninterrupted one saw)."""
  step = start_step
  while True:
    rng = np.random.default_rng(step)
    yield {"image": np.tanh(rng.standard_normal((batch, size, size, 3))).astype(np.float32)}
    step += 1


def _metrics(workdir):
  return [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  """An uninterrupted 4-step run: (final state, its workdir), shared by the tests below."""
  workdir = tmp_path_factory.mktemp("full")
  return trainer.train_and_evaluate(tiny_config(4), str(workdir), data=fake_data), workdir


def test_steps_run_with_lazy_regularisers_and_export_a_model(full_run):
  state, workdir = full_run
  assert int(state.step) == 4
  rows = _metrics(workdir)
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  # steps 0 and 2 (0-based) regularise: their rows carry r1 and the path-length terms.
  assert ["r1" in r for r in rows] == [True, False, True, False]
  assert ["path_penalty" in r for r in rows] == [True, False, True, False]
  assert all(np.isfinite(v) for r in rows for k, v in r.items() if k != "time")
  assert rows[2]["mean_path_length"] > 0
  assert (workdir / "model" / "model.json").exists()


def test_init_from_starts_from_an_exported_model_and_refuses_another_shape(full_run, tmp_path):
  trained, workdir = full_run
  config = tiny_config()
  config.seed = 5  # other fresh weights: what is equal below comes from the file
  config.init_from = str(workdir / "model")
  models, _, _ = trainer.build_models(config)
  g_tx, d_tx = trainer.make_optimizers(config)
  state = trainer.init_state(models, config, g_tx, d_tx)
  assert int(state.step) == 0 and float(state.mean_path_length) == 0.0  # a new run, not a resume
  for name in ("g", "g_ema", "d", "noises"):
    pairs = zip(jax.tree_util.tree_leaves(getattr(trained, name)), jax.tree_util.tree_leaves(getattr(state, name)))
    for a, b in pairs:
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.allclose(jax.tree_util.tree_leaves(trained.g)[0], jax.tree_util.tree_leaves(trained.g_ema)[0])
  # Adam starts from zero moments on the loaded weights.
  assert all(float(np.abs(x).max()) == 0 for x in jax.tree_util.tree_leaves(state.g_opt) if np.ndim(x) > 0)
  # A directory with only the generator (what the demo ships; jaxgeal.convert of a bare or GANgealing
  # generator): g starts from g_ema, the discriminator from the seed's fresh weights.
  only_g = checkpoint.load_models(config.init_from)["g_ema"]
  checkpoint.save_models(tmp_path / "g_only", {"g_ema": only_g})
  fresh = trainer.init_state(models, tiny_config(), g_tx, d_tx)
  config.init_from = str(tmp_path / "g_only")
  config.seed = 0
  state = trainer.init_state(models, config, g_tx, d_tx)
  for name, want in (("g", trained.g_ema), ("g_ema", trained.g_ema), ("d", fresh.d)):
    for a, b in zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(getattr(state, name))):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  wider = tiny_config()
  wider.model.channels = ((4, 32), (8, 16), (16, 8))
  wider.init_from = str(workdir / "model")
  models, _, _ = trainer.build_models(wider)
  with pytest.raises(ValueError, match=r"init_from=.*has shape .*config.model"):
    trainer.init_state(models, wider, *trainer.make_optimizers(wider))


def test_killed_run_resumes_exactly(full_run, tmp_path):
  full, full_dir = full_run
  part = stopped_runs.stopped_after(full_dir, 2, tmp_path / "part")  # as a run killed after step 2 leaves it
  resumed = trainer.train_and_evaluate(tiny_config(4), str(part), data=fake_data)
  for a, b in zip(jax.tree_util.tree_leaves(full.g_ema), jax.tree_util.tree_leaves(resumed.g_ema)):
    np.testing.assert_array_equal(a, b)
  assert _metrics(full_dir)[-1]["g_loss"] == _metrics(tmp_path / "part")[-1]["g_loss"]
  assert [r["step"] for r in _metrics(tmp_path / "part")] == [1, 2, 3, 4]  # the stopped run's 3 and 4 replaced


MULTI_DEVICE = """
from tests.trainers.multidevice import shard_shapes
from tests.trainers.stylegan2_trainer_test import tiny_config, fake_data, _metrics
from jaxgeal.trainers import stylegan2 as trainer
c = tiny_config(4, num_devices=8)
c.mesh.update(fsdp=4, min_shard_size=0)  # a 2 x 4 (data x fsdp) mesh; tiny tensors: shard every one the rule allows
state = trainer.train_and_evaluate(c, sys.argv[1] + "/fsdp", data=fake_data)
shards = shard_shapes({k: getattr(state, k) for k in ("g", "g_ema", "d", "g_opt", "d_opt")})
print(json.dumps({"rows": _metrics(sys.argv[1] + "/fsdp"), "shards": shards}))
"""


@pytest.mark.slow
def test_a_2x4_fsdp_mesh_gives_the_losses_of_one_device(full_run, tmp_path):
  """The uninterrupted run's 4 steps (both regularisers on steps 1 and 3) on 8 fake devices as a 2 x 4 (data x
  fsdp) mesh: the same losses, with a quarter of every weight the rule splits, and of its Adam moments, per
  device. (The 1-device run is this process's own: a program compiled under 8 devices is cached apart from the
  same program under 1. Data parallelism alone over several devices: tests/multiprocess_test.py.)"""
  _, one_dir = full_run
  out = multidevice.run_with_fake_devices(MULTI_DEVICE, tmp_path)
  assert [r["step"] for r in out["rows"]] == [1, 2, 3, 4]
  for r1, rf in zip(_metrics(one_dir), out["rows"], strict=True):
    for k in ("d_loss", "g_loss", "real_score", "fake_score", "r1", "path_penalty"):
      if k in r1 or k in rf:
        np.testing.assert_allclose(rf[k], r1[k], rtol=1e-4, atol=1e-5, err_msg=f"step {r1['step']} {k}")
  assert multidevice.assert_fsdp_split(out["shards"], 4) > len(out["shards"]) // 3
  for net in ("g", "d"):
    multidevice.assert_moments_split_as_parameters(out["shards"], net, f"['{net}_opt'][0].{{}}")


@pytest.mark.slow  # ~85 s cold on a loaded 2-core CPU: its own (bfloat16) compiled steps
def test_bfloat16_set_on_the_command_line_trains_two_steps_with_finite_metrics(tmp_path):
  """Mixed precision end to end: the bfloat16 networks train (losses, R1 and path length on step 1) while
  parameters and optimiser state stay float32."""
  argv = ["jaxgeal.main", "--config=configs/stylegan2_64.py:tiny", f"--workdir={tmp_path}", "--config.dtype=bfloat16"]
  argv += ["--config.total_steps=2", "--config.vis_every=0"]
  fv = flags.FlagValues()
  main.define_flags(fv, argv)
  main.parse_flags(argv, fv)
  config = fv.config
  config_checks.validate(config, available_devices=1)
  models, _, _ = trainer.build_models(config)
  assert models.G.dtype == models.D.dtype == jnp.bfloat16
  state = trainer.train_and_evaluate(config, str(tmp_path), data=lambda s: fake_data(s, batch=config.batch_size))
  assert int(state.step) == 2
  rows = _metrics(tmp_path)
  assert [r["step"] for r in rows] == [1, 2] and "r1" in rows[0] and "path_penalty" in rows[0]
  assert all(np.isfinite(v) for r in rows for k, v in r.items() if k != "time")
  leaves = jax.tree_util.tree_leaves((state.g, state.d, state.g_ema, state.g_opt, state.d_opt))
  assert {x.dtype for x in leaves if jnp.issubdtype(x.dtype, jnp.floating)} == {jnp.dtype(jnp.float32)}
