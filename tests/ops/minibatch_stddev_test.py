"""Minibatch standard deviation: rosinality's grouping (sample b in sub-group b % (B / group))."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgeal.ops.minibatch_stddev import minibatch_stddev


@pytest.mark.parametrize("batch,group", [(8, 4), (4, 4), (2, 4), (6, 2)])
def test_statistic_is_taken_over_strided_groups(batch, group):
  x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (batch, 3, 3, 5)))
  y = np.asarray(minibatch_stddev(jnp.asarray(x), group_size=group))
  assert y.shape == (batch, 3, 3, 6)
  np.testing.assert_array_equal(y[..., :5], x)
  g = min(batch, group)
  for b in range(batch):
    members = [i for i in range(batch) if i % (batch // g) == b % (batch // g)]
    want = np.mean(np.sqrt(np.var(x[members], axis=0) + 1e-8))
    np.testing.assert_allclose(y[b, :, :, 5], want, rtol=1e-5)


def test_several_feature_splits():
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 2, 2, 6))
  y = minibatch_stddev(x, group_size=2, n_features=3)
  assert y.shape == (4, 2, 2, 9)
