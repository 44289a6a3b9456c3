"""jaxgeal.trainers.loop: the periodic line says step / total, speed and time left; the parameter table goes to
the log file only (records marked console=False), its total to the console; `when` runs a lazy regulariser's
update in one program for a traced flag and picks one variant for a static one."""

import logging

import jax
import numpy as np

from jaxgeal import checkpoint, metric_writers
from jaxgeal.trainers import loop


def test_progress_reports_step_of_total_speed_and_time_left(monkeypatch):
  now = [100.0]
  monkeypatch.setattr(loop.time, "monotonic", lambda: now[0])
  p = loop.Progress(start_step=0, total_steps=1000)
  now[0] += 50.0  # first interval: compilation
  p(100)
  assert p.note == "step 100/1000 (10%), 2 steps/s, ETA 7m30s"
  now[0] += 10.0
  p(200)  # 10 steps/s since the first logged step: 800 steps left
  assert p.note == "step 200/1000 (20%), 10 steps/s, ETA 1m20s" and p.steps_per_sec == 10.0
  now[0] += 4000.0
  p(300)  # 200 steps in 4010 s since step 100: 700 steps left take 14035 s
  assert p.note.endswith("0.025 steps/s, ETA 3h53m")


def test_run_logs_a_progress_line_per_logging_step(tmp_path, caplog):
  manager = checkpoint.training_manager(tmp_path)
  writer = metric_writers.create_default_writer(tmp_path, resume_step=0, tensorboard=False)
  with caplog.at_level(logging.INFO):
    loop.run(
      name="toy",
      state={"x": np.zeros(())},
      step_fn=lambda s, i: (s, {"loss": 1.0 / (i + 1)}),
      start_step=0,
      total_steps=4,
      manager=manager,
      writer=writer,
      log_every=2,
      ckpt_every=4,
    )
  writer.close()
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("toy step")]
  assert [l.split(",")[0] for l in lines] == ["toy step 2/4 (50%)", "toy step 4/4 (100%)"]
  assert all(" ETA " in l and "loss=" in l for l in lines)


def test_the_parameter_table_is_for_the_log_file(caplog):
  with caplog.at_level(logging.INFO):
    loop.log_parameters("toy", {"dense": {"kernel": np.zeros((3, 4)), "bias": np.zeros(4)}})
  table, total = caplog.records
  assert getattr(table, "console", True) is False and "dense/kernel" in table.getMessage()
  assert total.getMessage() == "toy: 16 parameters" and getattr(total, "console", True)


def test_when_is_one_program_for_a_traced_flag_and_one_variant_for_a_static_flag():
  update, skip = (lambda x: x * 2.0), (lambda x: x + 0.0)
  step = jax.jit(lambda x, flag: loop.when(flag, update, skip, x))
  assert [float(step(np.float32(3), np.bool_(f))) for f in (True, False, True)] == [6.0, 3.0, 6.0]
  assert step._cache_size() == 1
  traced = str(jax.make_jaxpr(lambda x, flag: loop.when(flag, update, skip, x))(np.float32(3), np.bool_(True)))
  assert "cond" in traced
  for flag, value in ((True, 6.0), (False, 3.0)):
    static = jax.make_jaxpr(lambda x, flag=flag: loop.when(flag, update, skip, x))(np.float32(3))
    assert "cond" not in str(static) and float(jax.core.eval_jaxpr(static.jaxpr, static.consts, 3.0)[0]) == value
