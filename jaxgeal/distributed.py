"""Joining a multi-process JAX job (several hosts, or several processes on one host).

One process is the default and calls nothing here. With several, every process runs the same command and
`initialize` connects it to the others before JAX creates its devices; afterwards `jax.devices()` lists every
process's devices (the global mesh) and `jax.local_devices()` this process's own. Either the job is described
explicitly (coordinator address, process count, this process's id: the same address and count everywhere), or
JAX detects it from the cluster (Cloud TPU pod slices, SLURM, Open MPI: `jax.distributed.initialize()` without
arguments). On CPU the processes exchange data with gloo over TCP (JAX's default CPU collectives once
distributed), which is how the tests run 2 processes x 2 fake devices on loopback.

Process 0 is the one that writes what there is one of (metrics, TensorBoard, images, the exported model, the
console's progress): `is_primary()`.
"""

from __future__ import annotations

import dataclasses
import socket
import time

import jax


class DistributedError(RuntimeError):
  """The job could not be joined (one line: what, and the address)."""


@dataclasses.dataclass(frozen=True)
class Options:
  """How to start JAX: `cpu_devices` fake CPU devices (None: JAX's default); with `auto`, the job found by
  JAX's cluster detection; with `num_processes` > 1, the job at `coordinator_address` as `process_id`."""

  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  auto: bool = False
  cpu_devices: int | None = None
  timeout_s: int = 300

  @property
  def joins(self) -> bool:
    return self.auto or (self.num_processes or 1) > 1 or self.coordinator_address is not None


def check(options: Options):
  """DistributedError for an inconsistent set of options (before anything starts)."""
  o = options
  if o.cpu_devices is not None and o.cpu_devices < 1:
    raise DistributedError(f"--num_cpu_devices={o.cpu_devices}: must be a positive integer")
  if o.timeout_s < 1:
    raise DistributedError(f"--initialization_timeout={o.timeout_s}: must be a positive number of seconds")
  if o.auto:
    if o.coordinator_address or o.num_processes or o.process_id is not None:
      raise DistributedError(
        "--distributed=auto detects the job: leave out --coordinator_address/--num_processes/--process_id"
      )
    return
  if not o.joins:
    if o.process_id not in (None, 0):
      raise DistributedError(f"--process_id={o.process_id}: needs --num_processes and --coordinator_address")
    return
  if not o.coordinator_address or not o.num_processes or o.process_id is None:
    raise DistributedError(
      "a multi-process run needs --coordinator_address=HOST:PORT, --num_processes and --process_id"
    )
  if not o.coordinator_address.rsplit(":", 1)[-1].isdigit():
    raise DistributedError(f"--coordinator_address={o.coordinator_address}: must be HOST:PORT")
  if not 0 <= o.process_id < o.num_processes:
    raise DistributedError(f"--process_id={o.process_id}: must be in [0, {o.num_processes}) (--num_processes)")


def initialize(options: Options):
  """Set the CPU device count and join the job if asked; must run before JAX creates its devices. A coordinator
  that does not answer within `timeout_s` (or a process that never joins) is a DistributedError."""
  check(options)
  if options.cpu_devices is not None:
    jax.config.update("jax_num_cpu_devices", options.cpu_devices)
  if not options.joins:
    return
  # Gloo is JAX's default CPU collectives implementation; set it explicitly so that a CPU job never falls back to
  # no cross-process collectives (what MaxText's CPU tests do with jax_cpu_enable_gloo_collectives).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  timeout_s = options.timeout_s
  if not options.auto and options.process_id != 0:
    # JAX's client aborts the whole process (a C++ fatal error, no exception) when the coordinator does not
    # answer in time: wait for its port here first, so that the usual failure is one line.
    timeout_s = max(1, int(round(_wait_for_port(options.coordinator_address, options.timeout_s, options))))
  try:
    if options.auto:
      jax.distributed.initialize(initialization_timeout=timeout_s)
    else:
      jax.distributed.initialize(
        options.coordinator_address,
        options.num_processes,
        options.process_id,
        initialization_timeout=timeout_s,
      )
  except Exception as e:  # pylint: disable=broad-except  (XLA's runtime errors have no narrower public type)
    where = "the cluster's coordinator" if options.auto else f"the coordinator at {options.coordinator_address}"
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DistributedError(
      f"could not join the multi-process job: {where} did not answer within {options.timeout_s} s "
      f"(process {options.process_id} of {options.num_processes}; {first[:200]})"
    ) from None
  _connect_collectives(options.timeout_s)


def _wait_for_port(address: str, timeout_s: float, options: Options) -> float:
  """Wait until something listens at HOST:PORT; the seconds left of `timeout_s`, or DistributedError."""
  host, port = address.rsplit(":", 1)
  host = host.strip("[]")
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host, int(port)), timeout=1.0):
        return deadline - time.monotonic()
    except OSError:
      if time.monotonic() >= deadline:
        raise DistributedError(
          f"could not join the multi-process job: the coordinator at {address} did not answer within "
          f"{options.timeout_s} s (process {options.process_id} of {options.num_processes}; is process 0 running?)"
        ) from None
      time.sleep(0.2)


def _connect_collectives(timeout_s: int):
  """Run one all-reduce over every device, with all processes starting it together. On CPU, gloo connects a
  set of devices at its first collective and gives up after 30 s: without this, a process that compiles the
  first training step much faster than another (a loaded machine, a warm compilation cache) can time out."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jax.sharding import Mesh, NamedSharding, PartitionSpec  # pylint: disable=import-outside-toplevel

  mesh = Mesh(np.asarray(jax.devices()), ("all",))
  ones = jax.make_array_from_process_local_data(
    NamedSharding(mesh, PartitionSpec("all")), np.ones(jax.local_device_count(), np.int32)
  )
  total = jax.jit(lambda x: x.sum(), out_shardings=NamedSharding(mesh, PartitionSpec()))
  compiled = total.lower(ones).compile()
  barrier("jaxgeal.distributed.connect", timeout_s)
  count = int(compiled(ones))
  if count != jax.device_count():
    raise DistributedError(f"an all-reduce over the {jax.device_count()} devices counted {count}")


def describe() -> str:
  """E.g. "process 0 of 2: 2 local devices, 4 in all"."""
  return (
    f"process {jax.process_index()} of {jax.process_count()}: "
    f"{jax.local_device_count()} local devices, {jax.device_count()} in all"
  )


def is_primary() -> bool:
  """True in process 0: the process that writes the run's single outputs."""
  return jax.process_index() == 0


def barrier(name: str, timeout_s: int = 600):
  """Wait until every process gets here (nothing to do with one process). Through the coordination service,
  not a collective: processes may arrive minutes apart (one writing files, another compiling)."""
  if jax.process_count() == 1:
    return
  from jax._src import distributed as jax_distributed  # pylint: disable=import-outside-toplevel

  client = jax_distributed.global_state.client
  if client is None:  # Cloud TPU without initialize(): devices, not the coordination service, connect processes
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

    multihost_utils.sync_global_devices(name)
    return
  _BARRIERS[name] = _BARRIERS.get(name, 0) + 1  # barrier ids must be unique: count each name's uses
  client.wait_at_barrier(f"{name}/{_BARRIERS[name]}", timeout_in_ms=timeout_s * 1000)


_BARRIERS: dict[str, int] = {}
