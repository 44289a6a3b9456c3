#!/usr/bin/env bash
# Launch a jaxgeal training run on a Cloud TPU VM (single host or pod slice).
#
#   launch/tpu_vm.sh NAME ZONE ACCELERATOR CONFIG WORKDIR [extra flags...]
#   e.g. launch/tpu_vm.sh gg-cats us-central2-b v4-32 configs/cats.py gs://my-bucket/gangealing/cats
#
# Creates the TPU VM if it does not exist, copies this checkout to every worker, installs jaxgeal with
# jax[tpu], and starts `python -m jaxgeal.main` on all workers at once (JAX's multi-host runtime discovers the
# other hosts by itself on TPU VMs). WORKDIR should be a gs:// path so that every host sees the same
# checkpoints; rerunning the same command resumes from the last checkpoint. Converted generator / perceptual
# weights must be reachable from the workers (put them under the checkout's pretrained/ or on GCS and point
# the config at them).
set -euo pipefail
if [ $# -lt 5 ]; then
  sed -n '2,12p' "$0"; exit 2
fi
NAME=$1 ZONE=$2 ACCEL=$3 CONFIG=$4 WORKDIR=$5; shift 5
VERSION="${TPU_SOFTWARE_VERSION:-tpu-ubuntu2204-base}"
cd "$(dirname "$0")/.."

if ! gcloud compute tpus tpu-vm describe "$NAME" --zone "$ZONE" >/dev/null 2>&1; then
  gcloud compute tpus tpu-vm create "$NAME" --zone "$ZONE" --accelerator-type "$ACCEL" --version "$VERSION"
fi
tar czf /tmp/jaxgeal-src.tgz --exclude=.venv --exclude=.git --exclude='workdirs' .
gcloud compute tpus tpu-vm scp /tmp/jaxgeal-src.tgz "$NAME":~/ --zone "$ZONE" --worker=all
gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all --command "
  set -e
  mkdir -p ~/jaxgeal && tar xzf ~/jaxgeal-src.tgz -C ~/jaxgeal && cd ~/jaxgeal
  python3 -m pip install -q -U 'jax[tpu]' -e . 
  nohup python3 -m jaxgeal.main --config=$CONFIG --workdir=$WORKDIR $* > ~/train.log 2>&1 &
  echo started on \$(hostname)
"
echo "Follow with: gcloud compute tpus tpu-vm ssh $NAME --zone $ZONE --worker=0 --command 'tail -f ~/train.log'"
