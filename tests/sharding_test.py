"""jaxgeal.sharding's FSDP rule: large weights split on their largest divisible axis (output channels of a
conv or dense kernel), small and 1-D tensors replicated, Adam moments sharded like their parameters, and the
mesh's fsdp size must divide the devices. (Placement on several devices: tests/trainers/*multi* subprocess
tests.)"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from jaxgeal import sharding


@pytest.mark.parametrize(
  "shape,fsdp,min_size,spec",
  [
    ((3, 3, 64, 128), 4, 0, P(None, None, None, "fsdp")),  # conv kernel (HWIO): output channels
    ((512, 512), 8, 0, P(None, "fsdp")),  # dense: the last of equal axes
    ((128, 3), 2, 0, P("fsdp")),  # to-RGB: 3 output channels do not split, the inputs do
    ((3, 3, 5, 7), 2, 0, P()),  # nothing divides: replicated
    ((512,), 8, 0, P()),  # biases stay replicated
    ((512, 512), 8, 2**20, P()),  # under min_size: replicated
    ((512, 512), 1, 0, P()),  # data parallel: replicated
  ],
)
def test_fsdp_rule(shape, fsdp, min_size, spec):
  assert sharding.fsdp_spec(shape, fsdp, min_size) == spec


def test_adam_moments_follow_their_parameters_and_scalars_stay_replicated():
  params = {"conv": {"kernel": jnp.zeros((3, 3, 8, 16)), "bias": jnp.zeros((16,))}}
  state = {"params": params, "opt": optax.adam(1e-3).init(params), "step": jnp.zeros((), jnp.int32)}
  mesh = jax.sharding.AbstractMesh((1, 4), sharding.BATCH_AXES)
  specs = jax.tree_util.tree_map(lambda s: s.spec, sharding.state_shardings(mesh, state, min_size=0))
  adam = specs["opt"][0]
  assert adam.mu == adam.nu == specs["params"]
  assert specs["params"]["conv"]["kernel"] == P(None, None, None, "fsdp")
  assert specs["params"]["conv"]["bias"] == adam.count == specs["step"] == P()


def test_the_mesh_is_data_by_fsdp_and_fsdp_must_divide_the_devices():
  mesh = sharding.make_mesh(1)
  assert dict(mesh.shape) == {"data": 1, "fsdp": 1}
  with pytest.raises(ValueError, match=r"mesh.fsdp=2: must divide the number of devices \(1\)"):
    sharding.make_mesh(1, fsdp=2)


def test_shard_bytes_counts_one_devices_share():
  mesh = jax.sharding.AbstractMesh((1, 4), sharding.BATCH_AXES)
  tree = {"w": jax.ShapeDtypeStruct((64, 32), np.float32), "b": jax.ShapeDtypeStruct((32,), np.float32)}
  placed = jax.tree_util.tree_map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, sharding.state_shardings(mesh, tree, 0)
  )
  assert sharding.shard_bytes(placed) == (64 * 32 // 4 + 32) * 4
