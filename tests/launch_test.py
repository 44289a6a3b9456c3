"""launch/tpu_vm.sh and launch/slurm.sh in --dry_run mode: the commands they print (and run nothing), and the
SLURM batch script run under stand-in srun / scontrol / python, which shows the command each process gets."""

import os
import pathlib
import re
import stat
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _executable(path: pathlib.Path, text: str):
  path.write_text("#!/usr/bin/env bash\n" + text)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def fake_bin(tmp_path):
  """A PATH folder whose gcloud / sbatch / srun record that they were called (a dry run must call none)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for tool in ("gcloud", "sbatch", "srun"):
    _executable(bin_dir / tool, f'echo "$0 $*" >> {tmp_path}/called\n')
  return bin_dir


def _run(script, *args, path_dir, env=None):
  env = {**os.environ, **(env or {}), "PATH": f"{path_dir}:{os.environ['PATH']}"}
  return subprocess.run(
    ["bash", str(REPO / "launch" / script), *args], capture_output=True, text=True, env=env, timeout=60
  )


def test_tpu_dry_run_prints_every_command_for_all_workers_and_runs_none(tmp_path, fake_bin):
  proc = _run(
    "tpu_vm.sh", "--dry_run", "gg-cats", "us-central2-b", "v4-32", "configs/cats.py", "gs://bkt/cats",
    "--config.batch_size=40", path_dir=fake_bin,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr
  out = proc.stdout
  assert not (tmp_path / "called").exists()  # no gcloud call, not even `describe`
  assert "gcloud compute tpus tpu-vm create gg-cats --zone us-central2-b --accelerator-type v4-32" in out
  assert re.search(r"^gcloud compute tpus tpu-vm scp \S+ gg-cats:~/ .*--worker=all$", out, re.M)
  ssh = out[out.index("gcloud compute tpus tpu-vm ssh gg-cats") :]
  assert "--worker=all --command" in ssh.splitlines()[0]
  train = next(l for l in ssh.splitlines() if "jaxgeal.main" in l)
  assert train.split(">>")[0].split() == [
    "nohup", "python3", "-m", "jaxgeal.main", "--config=configs/cats.py", "--workdir=gs://bkt/cats",
    "--distributed=auto", "--config.batch_size=40",
  ]  # fmt: skip
  assert "kill $(cat ~/jaxgeal-train.pid)" in ssh  # a rerun stops the run it started, then resumes from WORKDIR
  assert "warning" not in proc.stderr


def test_tpu_launcher_refuses_missing_arguments_and_configs(fake_bin):
  assert _run("tpu_vm.sh", "--dry_run", "a", "b", path_dir=fake_bin).returncode == 2
  proc = _run("tpu_vm.sh", "--dry_run", "n", "z", "v4-8", "configs/nope.py", "gs://b/r", path_dir=fake_bin)
  assert proc.returncode == 2 and proc.stderr.strip() == (
    "error: config file configs/nope.py not found (give it relative to the checkout, e.g. configs/cats.py)"
  )
  local = _run("tpu_vm.sh", "--dry_run", "n", "z", "v4-8", "configs/cats.py", "runs/x", path_dir=fake_bin)
  assert local.returncode == 0 and "is not a gs:// path" in local.stderr


def _batch_script(stdout: str) -> str:
  lines = stdout.splitlines()
  assert lines[0].startswith("# slurm/jaxgeal-") and lines[-1].startswith("# then: sbatch slurm/jaxgeal-")
  return "\n".join(lines[1:-1]) + "\n"


def _run_job(tmp_path, script: str, nodes: int, tasks_per_node: int) -> list[str]:
  """Runs a batch script as SLURM would, with srun starting its command once per task (in order), scontrol
  naming the nodes and `python3` printing its arguments: one line per process."""
  bin_dir = tmp_path / "job_bin"
  bin_dir.mkdir()
  ntasks = nodes * tasks_per_node
  _executable(bin_dir / "scontrol", 'for i in $(seq 0 99); do echo "node-$i"; done\n')
  _executable(
    bin_dir / "srun",
    f"while [[ $1 == --* ]]; do shift; done\nfor i in $(seq 0 {ntasks - 1}); do\n"
    f'  SLURM_NTASKS={ntasks} SLURM_PROCID=$i SLURM_LOCALID=$((i % {tasks_per_node})) "$@"\ndone\n',
  )
  _executable(bin_dir / "python3", 'printf "%s|" "$@"; echo\n')  # one field per argument
  job = tmp_path / "job.sbatch"
  job.write_text(script)
  env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "node-[0-1]"}
  proc = subprocess.run(["bash", str(job)], capture_output=True, text=True, env=env, timeout=60)
  assert proc.returncode == 0, proc.stderr
  return proc.stdout.splitlines()


@pytest.mark.parametrize("per, tasks_per_node", [("gpu", 4), ("node", 1)])
def test_slurm_dry_run_prints_a_batch_script_whose_processes_form_one_job(tmp_path, fake_bin, per, tasks_per_node):
  proc = _run(
    "slurm.sh", "--dry_run", f"--per={per}", "2", "4", "configs/cats.py", "/shared/runs/my cats",
    "--config.batch_size=64", path_dir=fake_bin, env={"PORT": "23456", "SBATCH_EXTRA": "--partition=gpu"},
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr
  assert not (tmp_path / "called").exists() and not (REPO / "slurm").exists()
  script = _batch_script(proc.stdout)
  assert "#SBATCH --nodes=2\n" in script and f"#SBATCH --ntasks-per-node={tasks_per_node}\n" in script
  assert ("#SBATCH --gpus-per-task=1\n" if per == "gpu" else "#SBATCH --gpus-per-node=4\n") in script
  assert "#SBATCH --partition=gpu\n" in script
  processes = _run_job(tmp_path, script, nodes=2, tasks_per_node=tasks_per_node)
  n = 2 * tasks_per_node
  assert processes == [
    "-m|jaxgeal.main|--config=configs/cats.py|--workdir=/shared/runs/my cats|--config.batch_size=64|"
    f"--coordinator_address=node-0:23456|--num_processes={n}|--process_id={i}|"
    for i in range(n)
  ]


def test_slurm_launcher_writes_and_submits_the_batch_script(tmp_path, fake_bin):
  env = {"JOB_NAME": "cats", "JOB_DIR": str(tmp_path / "jobs")}
  proc = _run("slurm.sh", "1", "2", "configs/cats.py", "/shared/r", path_dir=fake_bin, env=env)
  assert proc.returncode == 0, proc.stderr
  (written,) = (tmp_path / "jobs").glob("cats-*.sbatch")
  assert (tmp_path / "called").read_text() == f"{fake_bin}/sbatch {written}\n"
  assert f"#SBATCH --output={tmp_path}/jobs/%x-%j.out" in written.read_text()
  assert "--ntasks-per-node=2" in written.read_text()


def test_slurm_launcher_refuses_bad_arguments(fake_bin):
  assert (
    _run("slurm.sh", "--dry_run", "--per=socket", "1", "1", "configs/cats.py", "w", path_dir=fake_bin).returncode == 2
  )
  proc = _run("slurm.sh", "--dry_run", "0", "8", "configs/cats.py", "w", path_dir=fake_bin)
  assert proc.returncode == 2 and "positive integers" in proc.stderr
