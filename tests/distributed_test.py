"""jaxgeal.distributed: one process joins nothing, and an inconsistent description of a multi-process job is one
line naming the flag before anything starts (the jobs themselves run in tests/multiprocess_test.py)."""

import pytest

from jaxgeal import distributed
from jaxgeal.distributed import Options


def _error(**kwargs) -> str:
  with pytest.raises(distributed.DistributedError) as e:
    distributed.check(Options(**kwargs))
  assert "\n" not in str(e.value)
  return str(e.value)


def test_one_process_is_the_default_and_joins_nothing():
  assert not Options().joins and not Options(num_processes=1, process_id=0).joins
  assert Options(auto=True).joins and Options(coordinator_address="h:1", num_processes=2, process_id=1).joins
  distributed.check(Options())
  distributed.check(Options(cpu_devices=4))
  distributed.check(Options(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=3))


def test_an_incomplete_or_inconsistent_job_is_one_line_naming_the_flag():
  assert "--coordinator_address=HOST:PORT, --num_processes and --process_id" in _error(num_processes=2, process_id=0)
  assert _error(coordinator_address="host", num_processes=2, process_id=0).startswith("--coordinator_address=host:")
  assert _error(coordinator_address="h:1", num_processes=2, process_id=2).startswith(
    "--process_id=2: must be in [0, 2)"
  )
  assert _error(process_id=1).startswith("--process_id=1: needs --num_processes")
  assert _error(auto=True, num_processes=2).startswith("--distributed=auto detects the job")
  assert _error(cpu_devices=0).startswith("--num_cpu_devices=0")
  assert _error(timeout_s=0).startswith("--initialization_timeout=0")


def test_the_barrier_of_one_process_returns_at_once():
  distributed.barrier("nothing to wait for")
  assert distributed.is_primary()
  assert distributed.describe().startswith("process 0 of 1: ")
