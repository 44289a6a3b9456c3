"""jaxgeal.checkpoint.read_model_index: a broken model.json is a ModelNotFoundError naming the file and what is
wrong, not a JSONDecodeError or KeyError from deep inside a trainer."""

import json

import pytest

from jaxgeal import checkpoint

GOOD = {
  "format": "jaxgeal-models",
  "version": 1,
  "source": None,
  "models": {"g_ema": {"kind": "generator", "config": {"size": 32}}},
}


@pytest.mark.parametrize(
  "text,problem",
  [
    ('{"format": "jaxgeal-models", "models": {', "is not valid JSON (Expecting property name"),
    ("[1, 2]", "is not a jaxgeal-models index"),
    (json.dumps({**GOOD, "version": 7}), "has version 7"),
    (json.dumps({**GOOD, "models": {}}), "'models' must map model names"),
    (json.dumps({**GOOD, "models": {"g_ema": {"config": {}}}}), "models['g_ema'] must be {'kind': str"),
  ],
)
def test_a_broken_index_names_the_file_and_the_problem(tmp_path, text, problem):
  (tmp_path / "model.json").write_text(text)
  with pytest.raises(checkpoint.ModelNotFoundError) as e:
    checkpoint.read_model_index(tmp_path)
  assert str(e.value).startswith(f"{tmp_path / 'model.json'} {problem}") or (
    str(e.value).startswith(f"{tmp_path / 'model.json'}: {problem}")
  ), str(e.value)


def test_a_good_index_reads(tmp_path):
  (tmp_path / "model.json").write_text(json.dumps(GOOD))
  assert checkpoint.read_model_index(tmp_path)["models"]["g_ema"]["kind"] == "generator"
