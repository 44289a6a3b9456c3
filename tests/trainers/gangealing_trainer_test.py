"""GANgealing trainer on the CPU-sized config: it runs end to end (PCA, training, checkpoints, visuals,
export), a killed run resumes with identical parameters, the loss falls on a small problem, and 8 fake CPU
devices as a 2 x 4 FSDP mesh give the losses of 1."""

import json
import pathlib

import jax
import numpy as np
import pytest

from jaxgeal import checkpoint
from jaxgeal.trainers import config_variants
from jaxgeal.trainers import gangealing as trainer
from tests.trainers import multidevice, stopped_runs

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

  part = stopped_runs.stopped_after(tmp_path / "full", 3, tmp_path / "part")  # as a run killed after step 3 leaves it
  resumed = trainer.train_and_evaluate(tiny(6), str(part))
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
import numpy as np
from tests.trainers.gangealing_trainer_test import tiny, rows
from tests.trainers.multidevice import shard_shapes
from tests.trainers.stopped_runs import stopped_after
from jaxgeal.trainers import gangealing as trainer
root = sys.argv[1]


def run(name, n, fsdp=1):
  c = tiny(3, num_devices=n, batch_size=16, micro_batch_size=8, ckpt_every=2, vis_every=0)
  c.mesh.update(fsdp=fsdp, min_shard_size=0)  # tiny tensors: shard every one the rule allows
  state = trainer.train_and_evaluate(c, f"{root}/{name}")
  params = {k: jax.device_get(getattr(state, k)) for k in ("stn", "stn_ema", "ll", "stn_opt")}
  return state, rows(f"{root}/{name}"), [float(np.sum(np.abs(x))) for x in jax.tree_util.tree_leaves(params)]


out = {}
for name, n, fsdp in (("1", 1, 1), ("fsdp", 8, 4)):  # fsdp: a 2 x 4 (data x fsdp) mesh
  state, out[name], out[name + "_params"] = run(name, n, fsdp)
out["shards"] = shard_shapes({k: getattr(state, k) for k in ("stn", "stn_ema", "stn_opt")})
# Step 3 after restoring step 2 on the other mesh (whose program is compiled above already).
for name, src, n, fsdp in (("fsdp_to_1", "fsdp", 1, 1), ("1_to_fsdp", "1", 8, 4)):
  stopped_after(f"{root}/{src}", 2, f"{root}/{name}")  # a run of `src`'s mesh stopped after step 2
  _, out[name], out[name + "_params"] = run(name, n, fsdp)
print(json.dumps(out))
"""


@pytest.mark.slow
def test_a_2x4_fsdp_mesh_and_restoring_on_the_other_mesh_give_the_losses_of_one_device(tmp_path):
  """3 steps of 2 micro-batches on 1 device and on 8 fake devices as a 2 x 4 (data x fsdp) mesh: the same losses
  and parameters; step 3 after restoring step 2 on the other mesh is the step the original mesh took. (Data
  parallelism alone over several devices: tests/multiprocess_test.py, tests/trainers/cluster_classifier_test.py.)"""
  out = multidevice.run_with_fake_devices(MULTI_DEVICE, tmp_path)
  keys = ("total", "perceptual", "tv", "flow_identity")

  def same(name, ref, rtol=1e-4, atol=1e-7):
    # A restored run keeps the stopped run's rows of steps 1 and 2 and logs step 3 itself.
    assert [r["step"] for r in out[name]] == [r["step"] for r in out[ref]] == [1, 2, 3], name
    for ra, rb in zip(out[name], out[ref]):
      for k in keys:
        np.testing.assert_allclose(ra[k], rb[k], rtol=rtol, atol=atol, err_msg=f"{name} step {ra['step']} {k}")
    # Parameters and Adam moments (sums of |x| per tensor): Adam divides by sqrt(nu), which magnifies the float
    # rounding of small gradients summed in another order.
    np.testing.assert_allclose(out[name + "_params"], out[ref + "_params"], rtol=1e-3, err_msg=name)

  same("fsdp", "1")
  for name, ref in (("fsdp_to_1", "fsdp"), ("1_to_fsdp", "1")):
    same(name, ref)
  # FSDP: every weight the rule splits (and its Adam moments) is a quarter per device.
  assert multidevice.assert_fsdp_split(out["shards"], 4) > len(out["shards"]) // 3
  multidevice.assert_moments_split_as_parameters(out["shards"], "stn", "['stn_opt'][0].{}")
