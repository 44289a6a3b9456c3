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
      raise DistributedError("--distributed=auto detects the job: leave out --coordinator_address/--num_processes/--process_id")
    return
  if not o.joins:
    if o.process_id not in (None, 0):
      raise DistributedError(f"--process_id={o.process_id}: needs --num_processes and --coordinator_address")
    return
  if not o.coordinator_address or not o.num_processes or o.process_id is None:
    raise DistributedError("a multi-process run needs --coordinator_address=HOST:PORT, --num_processes and --process_id")
  if ":" not in o.coordinator_address:
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
  try:
    if options.auto:
      jax.distributed.initialize(initialization_timeout=options.timeout_s)
    else:
      jax.distributed.initialize(
        options.coordinator_address,
        options.num_processes,
        options.process_id,
        initialization_timeout=options.timeout_s,
      )
  except Exception as e:  # pylint: disable=broad-except  (XLA's runtime errors have no narrower public type)
    where = "the cluster's coordinator" if options.auto else f"the coordinator at {options.coordinator_address}"
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DistributedError(
      f"could not join the multi-process job: {where} did not answer within {options.timeout_s} s "
      f"(process {options.process_id} of {options.num_processes}; {first[:200]})"
    ) from None


def describe() -> str:
  """E.g. "process 0 of 2: 2 local devices, 4 in all"."""
  return (
    f"process {jax.process_index()} of {jax.process_count()}: "
    f"{jax.local_device_count()} local devices, {jax.device_count()} in all"
  )


def is_primary() -> bool:
  """True in process 0: the process that writes the run's single outputs."""
  return jax.process_index() == 0


def barrier(name: str):
  """Wait until every process gets here (nothing to do with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

    multihost_utils.sync_global_devices(name)
