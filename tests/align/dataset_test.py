"""Flow-score ranking and congeal-dataset filtering."""

import numpy as np

from jaxgeal.align import dataset


def test_scrambled_flow_ranks_last():
  rng = np.random.RandomState(0)
  yy, xx = np.meshgrid(np.linspace(-1, 1, 32), np.linspace(-1, 1, 32), indexing="ij")
  smooth = 0.1 * np.stack([np.sin(xx), np.cos(yy)], -1)
  scrambled = smooth.reshape(-1, 2)[rng.permutation(32 * 32)].reshape(32, 32, 2)
  flows = np.stack([smooth * 2, scrambled, smooth, np.zeros_like(smooth)]).astype(np.float32)
  scores = dataset.scores_from_flows(flows)
  order = dataset.rank_by_score(scores)
  assert order[-1] == 1 and order[0] == 3


def test_select_keeps_fraction_and_filters():
  scores = np.arange(10, dtype=np.float32)[::-1]  # Image 9 is the smoothest.
  kept = dataset.select(scores, fraction_retained=0.3)
  assert sorted(kept) == [7, 8, 9]
  oob = np.zeros(10, bool)
  oob[8] = True
  eff = np.full(10, 256.0)
  eff[7] = 100.0
  assert list(dataset.select(scores, 0.3, oob, eff, 192)) == [9]
  assert len(dataset.select(scores, 1.0)) == 10


def test_write_scores(tmp_path):
  js, cs = dataset.write_scores(tmp_path, ["a", "b", "c"], np.array([0.5, 0.1, 0.9]))
  import json

  rows = json.loads(js.read_text())
  assert [r["name"] for r in rows] == ["b", "a", "c"]
  assert cs.read_text().splitlines()[1].startswith("0,b,")
