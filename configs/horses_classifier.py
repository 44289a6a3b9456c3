"""Second stage for the K=4 horses model: the cluster classifier (upstream train_cluster_classifier.py,
scripts/training/cars_cluster_classifier.sh: 55k iterations, period 50k, lr 1e-3).

  python -m jaxgeal.main --config=configs/horses_classifier.py --workdir=workdirs/horses_classifier \
      --config.gangealing_model=workdirs/horses/model
Append :tiny for the CPU-sized variant (stage 1 from configs/horses.py:tiny).
"""

import importlib.util
import pathlib

from jaxgeal.trainers import cluster_classifier


def get_config(arg=None):
  spec = importlib.util.spec_from_file_location("horses", pathlib.Path(__file__).with_name("horses.py"))
  stage1 = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(stage1)
  c = cluster_classifier.classifier_config(stage1.get_config(arg), "workdirs/horses/model")
  if arg == "tiny":
    c.update(total_steps=6, log_every=2, ckpt_every=3)
    c.optim.period = 10
  return c
