#!/usr/bin/env bash
# Launch (or resume) a jaxgeal training run on a Cloud TPU VM: one host or a multi-host pod slice.
#
#   launch/tpu_vm.sh [--dry_run] NAME ZONE ACCELERATOR CONFIG WORKDIR [extra jaxgeal.main flags...]
#   e.g. launch/tpu_vm.sh gg-cats us-central2-b v4-32 configs/cats.py gs://my-bucket/gangealing/cats
#
# Creates the TPU VM if `gcloud compute tpus tpu-vm describe` does not find it, copies this checkout to every
# worker, installs it with jax[tpu] and the gcs extra, and starts `python3 -m jaxgeal.main` on all workers at
# once (--worker=all), each joining the pod-wide job (DIST_FLAGS). WORKDIR should be a gs:// path that every
# host can read and write. Rerunning the same command stops the run it started before and resumes from the last
# checkpoint in WORKDIR. --dry_run prints every command it would run (gcloud, tar) and runs nothing.
# Environment: TPU_SOFTWARE_VERSION (default tpu-ubuntu2204-base).
set -euo pipefail

# jaxgeal.main's flag for joining a multi-process job: on a Cloud TPU pod slice JAX finds the other hosts
# itself (jax.distributed.initialize() without arguments). Harmless on a single host.
DIST_FLAGS="--distributed=auto"
REMOTE_DIR="~/jaxgeal"         # the checkout on each worker
LOG="~/jaxgeal-train.log"      # each worker's console output
PID_FILE="~/jaxgeal-train.pid" # the training process this script started on each worker (stopped on rerun)

DRY_RUN=0
if [ "${1:-}" = "--dry_run" ]; then
  DRY_RUN=1
  shift
fi
if [ $# -lt 5 ]; then
  sed -n '2,11p' "$0" >&2
  exit 2
fi
NAME=$1 ZONE=$2 ACCEL=$3 CONFIG=$4 WORKDIR=$5
shift 5
VERSION="${TPU_SOFTWARE_VERSION:-tpu-ubuntu2204-base}"
cd "$(dirname "$0")/.."
if [ ! -f "$CONFIG" ]; then
  echo "error: config file $CONFIG not found (give it relative to the checkout, e.g. configs/cats.py)" >&2
  exit 2
fi
case "$WORKDIR" in
  gs://*) ;;
  *) echo "warning: WORKDIR $WORKDIR is not a gs:// path: with several hosts each writes its own copy" >&2 ;;
esac

# One shell word, quoted only where needed, so that printed commands read and paste as they would run.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,~-]+$ ]]; then printf '%s' "$1"; else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
show() {
  local out="" a
  for a in "$@"; do out+="$(quote "$a") "; done
  printf '%s\n' "${out% }"
}
run() {
  show "$@"
  if [ "$DRY_RUN" = 0 ]; then "$@"; fi
}

train_args=""
for a in "--config=$CONFIG" "--workdir=$WORKDIR" $DIST_FLAGS "$@"; do train_args+=" $(quote "$a")"; done
REMOTE_SCRIPT="set -e
if [ -f $PID_FILE ]; then kill \$(cat $PID_FILE) 2>/dev/null || true; sleep 5; fi
mkdir -p $REMOTE_DIR && tar xzf ~/jaxgeal-src.tgz -C $REMOTE_DIR && cd $REMOTE_DIR
python3 -m pip install -q -U 'jax[tpu]' -e '.[gcs]'
nohup python3 -m jaxgeal.main$train_args >> $LOG 2>&1 &
echo \$! > $PID_FILE
echo started on \$(hostname)"

describe=(gcloud compute tpus tpu-vm describe "$NAME" --zone "$ZONE")
create=(gcloud compute tpus tpu-vm create "$NAME" --zone "$ZONE" --accelerator-type "$ACCEL" --version "$VERSION")
if [ "$DRY_RUN" = 1 ]; then
  echo "$(show "${describe[@]}") >/dev/null 2>&1 || $(show "${create[@]}")"
elif ! "${describe[@]}" >/dev/null 2>&1; then
  run "${create[@]}"
fi
run tar czf /tmp/jaxgeal-src.tgz --exclude=.venv --exclude=.git --exclude=workdirs .
run gcloud compute tpus tpu-vm scp /tmp/jaxgeal-src.tgz "$NAME":~/ --zone "$ZONE" --worker=all
run gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all --command "$REMOTE_SCRIPT"
echo "# follow with: $(show gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=0 --command "tail -f $LOG")"
