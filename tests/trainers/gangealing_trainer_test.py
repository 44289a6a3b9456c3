"""GANgealing trainer on the CPU-sized config: it runs end to end (PCA, training, checkpoints, visuals,
export), a killed run resumes with identical parameters, the loss falls on a small problem, and 8 fake CPU
devices give the losses of 1."""

import json
import pathlib

import jax
import numpy as np
import pytest

from jaxgeal import checkpoint
from jaxgeal.trainers import config_variants
from jaxgeal.trainers import gangealing as trainer
from tests.trainers import multidevice

REPO = pathlib.Path(__file__).resolve().parents[2]


def load_config(name="cats", variant="tiny"):
  return config_variants.load_config(f"{REPO / 'configs' / name}.py:{variant or ''}")


def tiny(total_steps, **overrides):
  c = load_config()
  c.total_steps = total_steps
  c.log_every = 1  # block on every step (fake-device collectives, exact metrics rows)
  c.ckpt_every = 3
  c.vis_every = 3
  for k, v in overrides.items():
    c[k] = v
  return c


def rows(workdir):
  return [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def test_runs_end_to_end_and_a_killed_run_resumes_exactly(tmp_path):
  full = trainer.train_and_evaluate(tiny(6), str(tmp_path / "full"))
  assert [r["step"] for r in rows(tmp_path / "full")] == list(range(1, 7))
  assert all(np.isfinite(r["total"]) for r in rows(tmp_path / "full"))
  assert all(r["equivariance"] == 0.0 for r in rows(tmp_path / "full"))  # a jaxgeal addition, off in paper configs
  assert sorted(p.name for p in (tmp_path / "full" / "visuals").glob("*_0000006.png")) == [
    "aligned_0000006.png",
    "average_0000006.png",
    "targets_0000006.png",
    "x_0000006.png",
  ]
  exported = checkpoint.load_models(tmp_path / "full" / "model")
  assert {n: m[0] for n, m in exported.items()} == {"t_ema": "stn", "ll": "latent_learner", "g_ema": "generator"}
  assert exported["t_ema"][1]["test"]["iters"] == 3  # cats' test-time settings travel with the model

  trainer.train_and_evaluate(tiny(3), str(tmp_path / "part"))  # "killed" after step 3
  resumed = trainer.train_and_evaluate(tiny(6), str(tmp_path / "part"))
  for name in ("stn", "stn_ema", "ll"):
    for a, b in zip(jax.tree_util.tree_leaves(getattr(full, name)), jax.tree_util.tree_leaves(getattr(resumed, name))):
      np.testing.assert_array_equal(a, b, err_msg=name)
  assert rows(tmp_path / "full")[-1]["total"] == rows(tmp_path / "part")[-1]["total"]


@pytest.mark.parametrize("micro_batch_size", [1, 2])
def test_the_cpu_step_has_no_loop_and_no_sharding_on_one_device(micro_batch_size):
  # Performance contract on XLA:CPU (jax 0.10.2): convolutions in a while loop run up to 10x slower
  # (jax-ml/jax#12868) and a sharding constraint on a one-device mesh made the step 400x slower, so the
  # micro-batches are unrolled and one device is left unconstrained.
  c = tiny(1, batch_size=2, micro_batch_size=micro_batch_size)
  mesh = trainer.sharding.make_mesh(1)
  G, gen_vars, gcfg = trainer.load_generator(c)
  models = trainer.build_models(c, G, gcfg)
  stn_tx, ll_tx, stn_sched, ll_sched = trainer.make_optimizers(c)
  state = trainer.init_state_shapes(models, c, stn_tx, ll_tx)
  perceptual = trainer.make_perceptual(c)
  step = trainer.make_train_step(models, c, mesh, stn_tx, ll_tx, stn_sched, ll_sched)
  jaxpr = jax.make_jaxpr(step)(state, gen_vars, perceptual).jaxpr
  assert not _conv_in_loop(jaxpr) and "sharding_constraint" not in _primitives(jaxpr)
  c.unroll_micro_batches = False  # accelerators: one scanned copy of the loss program
  step = trainer.make_train_step(models, c, mesh, stn_tx, ll_tx, stn_sched, ll_sched)
  assert _conv_in_loop(jax.make_jaxpr(step)(state, gen_vars, perceptual).jaxpr)


def test_lcn_stand_in_takes_its_scales_from_the_config():
  c = tiny(1)
  c.perceptual.update(kind="lcn", lcn_sigma=1.5, lcn_scales=3)
  d = trainer.make_perceptual(c)
  assert isinstance(d, trainer.gg_losses.LocalContrastDistance) and (d.sigma, d.scales) == (1.5, 3)
  with pytest.raises(ValueError, match="divisible by 4"):  # three scales pool twice
    d(np.zeros((1, 6, 6, 3), np.float32), np.zeros((1, 6, 6, 3), np.float32))


def _subjaxprs(eqn):
  for v in eqn.params.values():
    for x in v if isinstance(v, (tuple, list)) else (v,):
      if isinstance(x, jax.extend.core.ClosedJaxpr):
        yield x.jaxpr
      elif isinstance(x, jax.extend.core.Jaxpr):
        yield x


def _primitives(jaxpr) -> set:
  out = set()
  for eqn in jaxpr.eqns:
    out.add(eqn.primitive.name)
    for sub in _subjaxprs(eqn):
      out |= _primitives(sub)
  return out


def _conv_in_loop(jaxpr) -> bool:
  for eqn in jaxpr.eqns:
    subs = list(_subjaxprs(eqn))
    if eqn.primitive.name in ("scan", "while") and any("conv_general_dilated" in _primitives(s) for s in subs):
      return True
    if any(_conv_in_loop(s) for s in subs):
      return True
  return False


def test_loss_falls_when_the_target_is_fixed(tmp_path):
  c = tiny(24)
  c.optim.anneal_psi = 0  # psi = 0 from the start: align to the learned target throughout
  c.optim.period = 1000  # no restart inside the run
  c.batch_size = c.micro_batch_size = 4
  trainer.train_and_evaluate(c, str(tmp_path))
  losses = [r["total"] for r in rows(tmp_path)]
  assert np.mean(losses[-6:]) < 0.8 * np.mean(losses[:6]), losses


def test_equivariance_term_is_logged_and_weighted_into_the_total(tmp_path):
  c = tiny(1)
  c.loss.equivariance_weight = 5.0
  trainer.train_and_evaluate(c, str(tmp_path))
  (r,) = rows(tmp_path)
  assert r["equivariance"] > 0
  expected = (
    r["perceptual"]
    + c.loss.tv_weight * r["tv"]
    + c.loss.flow_identity_weight * r["flow_identity"]
    + 5.0 * r["equivariance"]
  )
  np.testing.assert_allclose(r["total"], expected, rtol=1e-5)
  # The zoom-neutral form (jaxgeal.losses.gangealing.equivariance_loss) is a config switch, off by default.
  G, _, gcfg = trainer.load_generator(c)
  assert not trainer.build_models(c, G, gcfg).eq_zoom_neutral
  c.loss.equivariance_zoom_neutral = True
  assert trainer.build_models(c, G, gcfg).eq_zoom_neutral


MULTI_DEVICE = """
from tests.trainers.gangealing_trainer_test import tiny, rows
from jaxgeal.trainers import gangealing as trainer
out = {}
for n in (1, 8):
  c = tiny(2)
  c.num_devices = n
  c.batch_size = 16
  c.micro_batch_size = 8
  trainer.train_and_evaluate(c, sys.argv[1] + f"/d{n}")
  out[n] = rows(sys.argv[1] + f"/d{n}")
print(json.dumps(out))
"""


@pytest.mark.slow
def test_eight_devices_give_the_losses_of_one(tmp_path):
  out = multidevice.run_with_fake_devices(MULTI_DEVICE, tmp_path)
  for r1, r8 in zip(out["1"], out["8"]):
    for k in ("total", "perceptual", "tv", "flow_identity"):
      np.testing.assert_allclose(r8[k], r1[k], rtol=1e-4, atol=1e-7, err_msg=f"step {r1['step']} {k}")
