"""Multi-process training (jaxgeal.distributed, launch/local.py): 2 processes x 2 fake CPU devices on loopback
train the tiny GANgealing config, and the tiny StyleGAN2 config with its weights split across the processes
(FSDP), to the same parameters and metrics as 1 process x 4 devices (data parallel); only process 0 writes the
run's outputs, a job killed after a checkpoint resumes exactly, and a coordinator that does not answer is one
error line within the initialization timeout."""

import pathlib
import subprocess
import sys
import time

import pytest

from jaxgeal.datasets import image_folder, synthetic
from tests import multiprocess

pytestmark = pytest.mark.multiprocess

# 4 steps, a checkpoint every 2, blocking on each step (log_every=1: concurrent collectives can deadlock on 2
# cores); a global batch of 8, 2 samples on each of the 4 devices, in one micro-batch (micro-batches on a mesh:
# tests/trainers/gangealing_trainer_test.py; a second one here would double the program each process compiles).
GANGEALING = [
  "--config=configs/cats.py:tiny",
  "--config.total_steps=4",
  "--config.ckpt_every=2",
  "--config.log_every=1",
  "--config.vis_every=0",
  "--config.batch_size=8",
  "--config.micro_batch_size=8",
]


def _info_lines(output: str) -> list[str]:
  return [l for l in output.splitlines() if " INFO " in l]


@pytest.fixture(scope="module")
def gangealing_runs(tmp_path_factory):
  """The same 4 steps as 1 process x 4 devices, and as a job of 2 processes x 2 devices killed (both processes)
  once step 2's checkpoint is complete and rerun to step 4 (with visuals at the end):
  (single workdir, job workdir, the killed job's output, the rerun job's CompletedProcess)."""
  root = tmp_path_factory.mktemp("gangealing")
  single = multiprocess.run_single([*GANGEALING, f"--workdir={root / 'single'}"], devices=4)
  assert single.returncode == 0, single.stderr[-3000:]
  job_dir = root / "job"
  killed = multiprocess.run_job_until(
    [*GANGEALING, f"--workdir={job_dir}", "--config.total_steps=1000"],
    lambda: multiprocess.checkpoint_steps(job_dir) == [2],
  )
  assert not (job_dir / "model").exists()
  rerun = multiprocess.run_job([*GANGEALING, f"--workdir={job_dir}", "--config.vis_every=4"])
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  return root / "single", job_dir, killed, rerun


def test_a_killed_two_process_job_resumes_to_what_one_process_computes(gangealing_runs):
  single_dir, job_dir, killed, rerun = gangealing_runs
  assert "gangealing step 2/1000" in killed
  assert "resumed from" in rerun.stderr and "at step 2" in rerun.stderr
  multiprocess.assert_same_run(job_dir, single_dir)
  assert multiprocess.checkpoint_steps(job_dir) == [2, 4]


def test_only_process_0_writes_and_reports(gangealing_runs):
  _, job_dir, killed, rerun = gangealing_runs
  out = rerun.stdout + rerun.stderr
  # Process 0's progress lines, none from process 1 (which prints warnings only, prefixed with its index).
  assert any("process 0 of 2: 2 local devices, 4 in all" in l for l in _info_lines(out))
  assert [l.split("gangealing step ")[1][:3] for l in _info_lines(out) if "gangealing step " in l] == ["3/4", "4/4"]
  assert not any(l.startswith("[process 1]") and " INFO " in l for l in (out + killed).splitlines())
  assert [r["step"] for r in multiprocess.metrics(job_dir)] == [1, 2, 3, 4]  # each step once
  assert sorted(p.name for p in (job_dir / "visuals").iterdir()) == [
    f"{name}_0000004.png" for name in ("aligned", "average", "targets", "x")
  ]
  assert len(list((job_dir / "tensorboard").iterdir())) == 2  # one event file per run
  assert (job_dir / "model" / "model.json").exists()
  assert sum("gangealing step 4/4" in l for l in (job_dir / "log.txt").read_text().splitlines()) == 1


def test_stylegan2_fsdp_over_two_processes_matches_one_data_parallel_process(tmp_path):
  """The job splits the weights and Adam moments over all 4 devices of both processes (a 1 x 4 FSDP mesh, each
  tensor on an axis 4 divides: each step gathers weights across processes); the single process keeps them
  whole (4 x 1, data parallel)."""
  # Every record holds the same image: each process reads its own slice of the records (a different one in
  # 2 processes than in 1), so only identical records give both runs the same global batches.
  synthetic.write_folder(tmp_path / "one", n=2, size=16, seed=3)
  (tmp_path / "images").mkdir()
  image = sorted((tmp_path / "one").iterdir())[0]
  for i in range(8):
    (tmp_path / "images" / f"{i}{image.suffix}").write_bytes(image.read_bytes())
  report = image_folder.build_image_folder(tmp_path / "images", tmp_path / "data", size=16)
  args = [
    "--config=configs/stylegan2_256.py:tiny",
    f"--config.data.source={report.path}",
    "--config.total_steps=1",  # the step with both regularisers: the largest program
    "--config.vis_every=1",  # samples from the split weights, fetched to the host by every process
    "--config.batch_size=4",
  ]
  fsdp = ["--config.mesh.fsdp=4", "--config.mesh.min_shard_size=0"]  # tiny weights: split every one the rule allows
  job = multiprocess.run_job([*args, *fsdp, f"--workdir={tmp_path / 'job'}"])
  assert job.returncode == 0, job.stderr[-3000:]
  single = multiprocess.run_single([*args, f"--workdir={tmp_path / 'single'}"], devices=4)
  assert single.returncode == 0, single.stderr[-3000:]
  multiprocess.assert_same_run(tmp_path / "job", tmp_path / "single")


def test_an_unreachable_coordinator_is_one_error_line_within_the_timeout(tmp_path):
  port = multiprocess.free_port()  # nobody listens there: process 1 waits for a coordinator that never comes
  start = time.monotonic()
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "jaxgeal.main",
      *GANGEALING,
      f"--workdir={tmp_path / 'w'}",
      f"--coordinator_address=127.0.0.1:{port}",
      "--num_processes=2",
      "--process_id=1",
      "--initialization_timeout=3",
    ],
    cwd=multiprocess.REPO,
    env=multiprocess.env(),
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 2, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
  assert (
    errors == [errors[0]]
    and f"could not join the multi-process job: the coordinator at 127.0.0.1:{port} did not answer within 3 s"
    in (errors[0])
  ), proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  assert time.monotonic() - start < 60
  assert not pathlib.Path(tmp_path / "w").exists()


@pytest.mark.parametrize(
  "override,message",
  [
    ("--config.micro_batch_size=2", "config.micro_batch_size=2: must be a multiple of the number of devices (4)"),
    ("--config.num_devices=2", "config.num_devices=2: a run of 2 processes uses all 4 devices; leave it unset"),
  ],
)
def test_a_batch_or_device_count_that_does_not_fit_the_job_is_one_error_line(override, message, tmp_path):
  job = multiprocess.run_job([*GANGEALING, f"--workdir={tmp_path / 'w'}", override])
  assert job.returncode == 2, job.stderr[-3000:]
  errors = [l for l in job.stderr.splitlines() if l.startswith("error: ")]
  assert errors == [f"error: {message}"] * 2, job.stderr[-3000:]  # one line from each process
