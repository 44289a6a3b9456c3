"""Specification of `jaxgeal.input_pipeline`: model-ready batches, disjoint shards, exact resumption."""

from __future__ import annotations

import numpy as np
import pytest

from jaxgeal import input_pipeline
from jaxgeal.datasets import reader
from tests.datasets import fakes

N = 12


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  """12 solid images; image i has grey value 10 * i, so a batch tells which records it holds."""
  root = tmp_path_factory.mktemp("pipeline")
  for i in range(N):
    fakes.write_image(root / "src" / f"{i:02d}.png", fakes.solid(6, 10, 10 * i))
  return input_pipeline.build_image_folder(root / "src", root / "out", size=4, pad="center").path


def _ids(batch) -> list[int]:
  return [int(round((float(v) + 1) * 127.5 / 10)) for v in batch["image"][:, 0, 0, 0]]


def test_batches_are_float32_nhwc_in_minus_one_to_one(dataset):
  it = input_pipeline.make_image_iterator(dataset, batch_size=5, seed=0)
  batch = next(it)
  assert batch["image"].shape == (5, 4, 4, 3) and batch["image"].dtype == np.float32
  assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0
  assert batch["name"].shape == (5,)
  for name, i in zip(batch["name"], _ids(batch)):  # Pixel values match the file they came from.
    assert name == f"{i:02d}.png".encode()
  np.testing.assert_allclose(batch["image"][0], _ids(batch)[0] * 10 / 127.5 - 1.0, atol=1e-6)


def test_one_epoch_without_shuffling_is_the_records_in_order(dataset):
  it = input_pipeline.make_image_iterator(
    dataset, batch_size=4, shuffle=False, repeat=False, shard_index=0, shard_count=1, keys=["image"]
  )
  batches = list(it)
  assert [_ids(b) for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
  assert set(batches[0]) == {"image"}


def test_two_shards_are_disjoint_and_cover_the_data_every_epoch(dataset):
  seen = []
  for shard in range(2):
    it = input_pipeline.make_image_iterator(
      dataset, batch_size=3, seed=7, shard_index=shard, shard_count=2, num_epochs=2
    )
    ids = [i for b in it for i in _ids(b)]
    assert len(ids) == 2 * N // 2
    assert sorted(ids[: N // 2]) == sorted(ids[N // 2 :])  # Each epoch visits the same shard ...
    assert ids[: N // 2] != ids[N // 2 :]  # ... in a new order.
    seen.append(set(ids))
  assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(N))


def test_a_saved_state_resumes_with_the_same_next_batch(dataset):
  kwargs = dict(batch_size=5, seed=3, shard_index=0, shard_count=1)
  it = input_pipeline.make_image_iterator(dataset, **kwargs)
  for _ in range(3):  # Into the second epoch (12 records, batches of 5).
    next(it)
  state = it.get_state()
  expected = [next(it), next(it)]
  resumed = input_pipeline.make_image_iterator(dataset, **kwargs)
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    np.testing.assert_array_equal(got["image"], want["image"])
    np.testing.assert_array_equal(got["name"], want["name"])


def test_sources_can_be_named_or_given_directly(dataset):
  by_name = input_pipeline.make_image_iterator(
    "jaxgeal_image_folder/4_center", batch_size=2, data_dir=dataset.split("jaxgeal_image_folder")[0]
  )
  assert next(by_name)["image"].shape == (2, 4, 4, 3)
  in_memory = [{"image": fakes.solid(4, 4, 255), "label": np.int32(i)} for i in range(4)]  # e.g. synthetic.
  batch = next(input_pipeline.make_image_iterator(in_memory, batch_size=4, shuffle=False))
  np.testing.assert_array_equal(batch["image"], np.ones((4, 4, 4, 3), np.float32))
  np.testing.assert_array_equal(batch["label"], [0, 1, 2, 3])
  assert "num_records=12" in repr(reader.open_dataset(dataset))  # No absolute path: states move machines.


def test_invalid_shards_are_rejected(dataset):
  with pytest.raises(ValueError, match="shard_index"):
    input_pipeline.make_image_iterator(dataset, batch_size=2, shard_index=2, shard_count=2)


def test_training_images_resume_at_a_step_with_the_batch_an_uninterrupted_run_sees(dataset):
  import ml_collections

  cfg = ml_collections.ConfigDict({"source": str(dataset)})
  straight = input_pipeline.training_images(cfg, 3, seed=5)
  batches = [next(straight)["image"] for _ in range(5)]  # crosses an epoch boundary
  resumed = input_pipeline.training_images(cfg, 3, seed=5, start_step=3)
  np.testing.assert_array_equal(next(resumed)["image"], batches[3])
  np.testing.assert_array_equal(next(resumed)["image"], batches[4])


def test_training_images_without_a_source_explain_how_to_prepare_one():
  import ml_collections

  with pytest.raises(ValueError, match="jaxgeal.datasets.prepare"):
    input_pipeline.training_images(ml_collections.ConfigDict({"source": ""}), 4, seed=0)
