"""A run records its config in its work directory; a rerun with another config resumes where the model's shapes
allow it (and logs what changed), and otherwise fails in one line naming the array that differs, touching
nothing; a pipeline stage is skipped only when its model was exported by the same config."""

import json
import logging

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxgeal import checkpoint
from jaxgeal.trainers import loop, resume


def config(width=4, lr=0.002, steps=10):
  return ml_collections.ConfigDict(
    dict(model=dict(width=width, channels=((4, 8), (8, 4))), optim=dict(lr=lr), total_steps=steps)
  )


def state_of(c, value=0.0):
  return {"params": {"dense": {"kernel": jnp.full((3, c.model.width), value)}}, "step": jnp.asarray(0)}


def start(workdir, c, value=1.0):
  """A run of config `c` that saved one checkpoint (step 1) holding `value`."""
  manager = checkpoint.training_manager(workdir)
  state = loop.restore_or_init(manager, lambda: state_of(c, value), lambda: state_of(c), config=c)
  manager.save(1, args=checkpoint.ocp.args.StandardSave(state))
  manager.wait_until_finished()
  return manager


def rerun(workdir, c):
  return loop.restore_or_init(checkpoint.training_manager(workdir), lambda: state_of(c), lambda: state_of(c), config=c)


def test_flat_config_is_dotted_keys_with_json_values():
  assert resume.flat(config()) == {
    "model.width": 4,
    "model.channels": [[4, 8], [8, 4]],
    "optim.lr": 0.002,
    "total_steps": 10,
  }


def test_changes_lists_each_differing_key_including_added_and_removed_ones(tmp_path):
  assert resume.changes(tmp_path, config()) is None  # nothing recorded
  resume.record(tmp_path, config())
  assert resume.changes(tmp_path, config()) == []
  other = config(lr=0.001, steps=20)
  other.extra = "x"
  del other.model["channels"]
  assert resume.changes(tmp_path, other) == [
    ("extra", None, "x"),
    ("model.channels", [[4, 8], [8, 4]], None),
    ("optim.lr", 0.002, 0.001),
    ("total_steps", 10, 20),
  ]
  assert resume.describe(resume.changes(tmp_path, other), limit=2) == (
    'extra null -> "x", model.channels [[4, 8], [8, 4]] -> null and 2 more'
  )


def test_an_unreadable_record_counts_as_none(tmp_path, caplog):
  (tmp_path / resume.CONFIG_FILE).write_text('{"model": ')
  with caplog.at_level(logging.WARNING):
    assert resume.changes(tmp_path, config()) is None
  assert "is not a config record" in caplog.text


def test_a_new_run_records_its_config(tmp_path):
  start(tmp_path, config())
  assert json.loads((tmp_path / resume.CONFIG_FILE).read_text()) == json.loads(json.dumps(config().to_dict()))


def test_a_rerun_with_the_same_model_resumes_and_logs_what_changed(tmp_path, caplog):
  start(tmp_path, config(), value=1.0)
  longer = config(lr=0.001, steps=20)
  with caplog.at_level(logging.WARNING):
    state = rerun(tmp_path, longer)
  np.testing.assert_array_equal(np.asarray(state["params"]["dense"]["kernel"]), 1.0)  # restored, not initialised
  assert "resuming with config changes: optim.lr 0.002 -> 0.001, total_steps 10 -> 20" in caplog.text
  assert resume.changes(tmp_path, longer) == []  # the record now says what the rest of the run trains with


def test_a_rerun_with_another_model_fails_naming_the_array_and_touches_nothing(tmp_path):
  start(tmp_path, config(width=4))
  before = (tmp_path / resume.CONFIG_FILE).read_text()
  with pytest.raises(resume.ResumeError) as e:
    rerun(tmp_path, config(width=6, steps=20))
  message = str(e.value)
  assert "\n" not in message
  assert "params/dense/kernel is (3, 4) in the checkpoint and (3, 6) with this config" in message
  assert "config changes since that run started: model.width 4 -> 6, total_steps 10 -> 20" in message
  assert "give a new --workdir" in message
  assert (tmp_path / resume.CONFIG_FILE).read_text() == before
  assert checkpoint.training_manager(tmp_path).all_steps() == [1]


def test_an_array_only_one_side_has_is_named(tmp_path):
  start(tmp_path, config())
  c = config()
  grown = lambda: dict(state_of(c), ema=state_of(c)["params"])
  manager = checkpoint.training_manager(tmp_path)
  with pytest.raises(resume.ResumeError, match=r"this config builds ema/dense/kernel \(3, 4\), which the checkpoint"):
    loop.restore_or_init(manager, grown, grown, config=c)


def test_a_checkpoint_without_a_record_is_still_checked(tmp_path):
  start(tmp_path, config(width=4))
  (tmp_path / resume.CONFIG_FILE).unlink()  # a run from before configs were recorded
  with pytest.raises(resume.ResumeError, match=r"\(the run recorded no config\)"):
    rerun(tmp_path, config(width=6))
  assert int(rerun(tmp_path, config(width=4))["step"]) == 0  # the same model resumes


def test_a_stage_is_finished_only_when_its_model_came_from_the_same_config(tmp_path):
  assert not resume.finished(tmp_path, config())  # no model
  (tmp_path / "model").mkdir()
  (tmp_path / "model" / "model.json").write_text("{}")
  assert resume.finished(tmp_path, config())  # a model from a run that recorded no config: kept, as before
  resume.record(tmp_path, config())
  assert resume.finished(tmp_path, config())
  assert not resume.finished(tmp_path, config(steps=20))  # train longer: back to the trainer, which resumes
