#!/usr/bin/env bash
# Submit a multi-node GPU training run to SLURM: one jaxgeal process per GPU (default) or per node.
#
#   launch/slurm.sh [--dry_run] [--per=gpu|node] NODES GPUS_PER_NODE CONFIG WORKDIR [extra jaxgeal.main flags...]
#   e.g. launch/slurm.sh 2 8 configs/cats.py /shared/runs/cats --config.batch_size=64
#
# Writes a batch script to $JOB_DIR/$JOB_NAME-<date>.sbatch and submits it with sbatch. In the job, srun starts the
# processes; each runs `python -m jaxgeal.main` with DIST_FLAGS (coordinator: the job's first node), so the
# processes form one JAX job (jax.distributed). WORKDIR must be reachable from every node (a shared file system
# or gs://); resubmitting with the same WORKDIR resumes from its last checkpoint. --dry_run prints the batch
# script and the sbatch command, and writes and submits nothing. Environment: PYTHON (default python3, the
# interpreter with jaxgeal and a CUDA build of jax installed on the nodes), PORT (coordinator port, 12355),
# SBATCH_EXTRA (more #SBATCH options, e.g. "--partition=gpu --time=24:00:00"), JOB_NAME (jaxgeal), JOB_DIR
# (slurm: the batch scripts and the jobs' output, relative to the checkout).
set -euo pipefail

# jaxgeal.main's multi-process flags, expanded in each task (srun sets SLURM_NTASKS and SLURM_PROCID per task;
# COORDINATOR is set by the batch script). The alternative "--distributed=auto" leaves the detection to JAX.
DIST_FLAGS='--coordinator_address=$COORDINATOR --num_processes=$SLURM_NTASKS --process_id=$SLURM_PROCID'

DRY_RUN=0 PER=gpu
while [ $# -gt 0 ]; do
  case "$1" in
    --dry_run) DRY_RUN=1 ;;
    --per=gpu | --per=node) PER=${1#--per=} ;;
    --per=*) echo "error: $1: give --per=gpu or --per=node" >&2; exit 2 ;;
    *) break ;;
  esac
  shift
done
if [ $# -lt 4 ]; then
  sed -n '2,14p' "$0" >&2
  exit 2
fi
NODES=$1 GPUS=$2 CONFIG=$3 WORKDIR=$4
shift 4
for n in "$NODES" "$GPUS"; do
  if ! [[ $n =~ ^[1-9][0-9]*$ ]]; then echo "error: NODES and GPUS_PER_NODE must be positive integers, got $n" >&2; exit 2; fi
done
PYTHON="${PYTHON:-python3}" PORT="${PORT:-12355}" JOB_NAME="${JOB_NAME:-jaxgeal}" JOB_DIR="${JOB_DIR:-slurm}"
cd "$(dirname "$0")/.."
if [ ! -f "$CONFIG" ]; then echo "error: config file $CONFIG not found" >&2; exit 2; fi

if [ "$PER" = gpu ]; then
  tasks="#SBATCH --ntasks-per-node=$GPUS
#SBATCH --gpus-per-task=1"
else
  tasks="#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=$GPUS"
fi
extra=""
for o in ${SBATCH_EXTRA:-}; do extra+="#SBATCH $o"$'\n'; done
args=""
for a in "--config=$CONFIG" "--workdir=$WORKDIR" "$@"; do args+=" $(printf '%q' "$a")"; done

SCRIPT="#!/usr/bin/env bash
#SBATCH --job-name=$JOB_NAME
#SBATCH --nodes=$NODES
$tasks
#SBATCH --output=$JOB_DIR/%x-%j.out
${extra}set -euo pipefail
cd $(printf '%q' "$PWD")
# Process 0 runs on the first node of the job and hosts the coordinator. (sed reads every line: with head,
# scontrol could die of SIGPIPE and pipefail stop the job.)
COORDINATOR=\"\$(scontrol show hostnames \"\$SLURM_JOB_NODELIST\" | sed -n 1p):$PORT\"
export COORDINATOR
srun --kill-on-bad-exit=1 bash -c 'exec \"\$0\" -m jaxgeal.main \"\$@\" $DIST_FLAGS' $(printf '%q' "$PYTHON")$args"

FILE="$JOB_DIR/$JOB_NAME-$(date +%Y%m%d-%H%M%S).sbatch"
if [ "$DRY_RUN" = 1 ]; then
  echo "# $FILE:"
  printf '%s\n' "$SCRIPT"
  echo "# then: sbatch $FILE"
  exit 0
fi
mkdir -p "$JOB_DIR"
printf '%s\n' "$SCRIPT" > "$FILE"
echo "sbatch $FILE"
sbatch "$FILE"
