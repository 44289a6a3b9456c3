"""Device mesh and sharding rules: data parallelism and fully-sharded data parallelism (FSDP, ZeRO-3) with
`jax.jit` + `NamedSharding`, the successor of pjit.

The mesh is 2-D, ("data", "fsdp"), chosen in the config: `config.mesh.fsdp = k` makes the "fsdp" axis k
devices long and "data" the rest (devices / k); k = 1 (the default) is plain data parallelism.

Batches are split over *both* axes, i.e. over every device, exactly as data parallelism on the same devices
splits them. So an FSDP step computes the same per-device slices of the same global-batch program; only where
the weights live changes (XLA all-gathers a sharded weight before its use and reduce-scatters its gradient), and
results equal the data-parallel ones up to the order of float sums. (Splitting the batch over "data" only would
make the k devices of an fsdp group compute the same slice k times.)

Every tensor of a training state (parameters, their EMA, the optimiser's moments, which optax keeps in trees of
the parameters' shapes) follows one rule, `state_shardings`: the first PARAM_RULES regex matching its
'/'-joined path wins; otherwise a tensor of >= 2 dimensions and at least `min_size` elements is split along
"fsdp" on its largest axis that the axis length divides (a conv's or dense layer's output channels, usually;
the last such axis on a tie), and everything else (biases, scales, scalars, keys) is replicated. Because the
rule looks at shapes, an Adam moment is sharded like its parameter. Models and ops know nothing of this.

Random draws inside jitted steps use JAX's partitionable threefry, so a step produces the same numbers on any
mesh.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)  # a batch's leading axis is split over all devices
# Tensors smaller than this (elements) stay replicated under FSDP: sharding them saves little memory and costs
# one collective each. 2**14 float32 = 64 KiB.
MIN_SHARD_SIZE = 2**14
# (regex on the parameter path, PartitionSpec). First match wins and overrides the FSDP rule.
PARAM_RULES: list[tuple[str, P]] = []


def make_mesh(num_devices: int | None = None, fsdp: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
  """A ("data", "fsdp") mesh of shape (n / fsdp, fsdp) over the first `num_devices` devices (default: all)."""
  devices = list(devices if devices is not None else jax.devices())
  if num_devices is not None:
    if num_devices > len(devices):
      raise ValueError(
        f"asked for {num_devices} devices, only {len(devices)} are available "
        f"(on CPU set jax_num_cpu_devices before JAX starts)"
      )
    devices = devices[:num_devices]
  if fsdp < 1 or len(devices) % fsdp:
    raise ValueError(f"mesh.fsdp={fsdp}: must divide the number of devices ({len(devices)})")
  return Mesh(np.asarray(devices).reshape(len(devices) // fsdp, fsdp), BATCH_AXES)


def _mesh_config(config, key: str, default):
  mesh = config.get("mesh")
  return default if mesh is None else mesh.get(key, default)


def mesh_from_config(config) -> Mesh:
  """The mesh of `config.num_devices` (None: all) and `config.mesh.fsdp` (absent: 1, data parallel)."""
  return make_mesh(config.get("num_devices"), fsdp=_mesh_config(config, "fsdp", 1))


def min_shard_size(config) -> int:
  """`config.mesh.min_shard_size`, or MIN_SHARD_SIZE for configs without it."""
  return _mesh_config(config, "min_shard_size", MIN_SHARD_SIZE)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over all devices (both mesh axes)."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _path_str(path) -> str:
  parts = []
  for k in path:
    parts.append(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))))
  return "/".join(parts)


def fsdp_spec(shape: Sequence[int], fsdp: int, min_size: int = MIN_SHARD_SIZE) -> P:
  """The FSDP rule for one tensor shape on an fsdp axis of `fsdp` devices (see the module docstring)."""
  if fsdp <= 1 or len(shape) < 2 or int(np.prod(shape)) < min_size:
    return P()
  axes = [i for i, d in enumerate(shape) if d % fsdp == 0]
  if not axes:
    return P()
  axis = max(axes, key=lambda i: (shape[i], i))
  return P(*([None] * axis), FSDP_AXIS)


def state_shardings(mesh: Mesh, tree, min_size: int = MIN_SHARD_SIZE) -> Any:
  """NamedShardings for a pytree of arrays (or ShapeDtypeStructs): PARAM_RULES, then the FSDP rule."""
  fsdp = mesh.shape.get(FSDP_AXIS, 1)

  def rule(path, leaf):
    name, shape = _path_str(path), np.shape(leaf)
    for pattern, spec in PARAM_RULES:
      if re.search(pattern, name) and len(spec) <= len(shape):
        return NamedSharding(mesh, spec)
    return NamedSharding(mesh, fsdp_spec(shape, fsdp, min_size))

  return jax.tree_util.tree_map_with_path(rule, tree)


def param_shardings(mesh: Mesh, tree) -> Any:
  """PARAM_RULES only, everything else replicated (frozen inputs that need no FSDP, e.g. visuals' latents)."""
  return state_shardings(mesh, tree, min_size=np.inf)


def put_replicated(tree, mesh: Mesh):
  return jax.device_put(tree, param_shardings(mesh, tree))


def put_state(tree, mesh: Mesh, min_size: int = MIN_SHARD_SIZE):
  """`tree` placed by `state_shardings`: FSDP-sharded where the mesh has an fsdp axis > 1, else replicated."""
  return jax.device_put(tree, state_shardings(mesh, tree, min_size))


def jit_step(fn, mesh: Mesh, in_shardings, out_shardings, **kwargs):
  """`jax.jit(fn)` declaring its argument / result shardings (with donate_argnums etc. in kwargs).

  On a one-device mesh the shardings are left out: there they say nothing, and on XLA:CPU they may switch on
  the SPMD partitioner, which made the tiny GANgealing step 400x slower (see constrain_batch).
  """
  if mesh.size == 1:
    return jax.jit(fn, **kwargs)
  return jax.jit(fn, in_shardings=in_shardings, out_shardings=out_shardings, **kwargs)


def put_batch(tree, mesh: Mesh):
  """Host batches -> arrays split over all devices. With several processes each passes its local slice."""
  if jax.process_count() > 1:
    return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(batch_sharding(mesh), np.asarray(x)), tree
    )
  return jax.device_put(tree, batch_sharding(mesh))


def constrain_batch(x, mesh: Mesh):
  """Inside jit: ask for x (batch-leading) to be split over all devices.

  A no-op on a one-device mesh: there the constraint only switches XLA:CPU to the SPMD partitioner, which
  made the tiny GANgealing step 400x slower (8.6 s instead of 20 ms, jax 0.10.2).
  """
  if mesh.size == 1:
    return x
  return jax.lax.with_sharding_constraint(x, batch_sharding(mesh))


def gather(tree, mesh: Mesh):
  """Inside jit: FSDP-sharded weights gathered whole before their use (no-op without an fsdp axis > 1).

  Without it XLA's partitioner may follow a weight's split (output channels) into the activations and leave the
  batch unsplit: the tiny GANgealing step's temporaries were 3x the data-parallel ones on 4 devices. Gathered,
  every device computes its batch slice as under data parallelism; the transpose (the gradient) is summed over
  the batch and each device keeps its slice of it for the optimiser.
  """
  if mesh.shape.get(FSDP_AXIS, 1) == 1:
    return tree
  return jax.lax.with_sharding_constraint(tree, jax.tree_util.tree_map(lambda _: replicated(mesh), tree))


def to_host(tree):
  """Host (numpy) copies of a pytree's whole arrays. An array split over several processes' devices is gathered
  (a collective: every process must call this), where jax.device_get would refuse it."""

  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)

  return jax.tree_util.tree_map(fetch, tree)


def shard_bytes(tree) -> int:
  """Bytes one device holds of a pytree of sharded arrays or ShapeDtypeStructs with shardings (the largest
  shard of each leaf: a device's share, whichever device)."""
  total = 0
  for leaf in jax.tree_util.tree_leaves(tree):
    shape = leaf.sharding.shard_shape(leaf.shape)
    total += int(np.prod(shape)) * np.dtype(leaf.dtype).itemsize
  return total
