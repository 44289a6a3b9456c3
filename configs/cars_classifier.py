"""Second stage for the K=4 cars model: the cluster classifier (upstream repository wpeebles/gangealing at commit
ffa6387c7ffd3f7de76bdc693dc2272e274e9bfd: train_cluster_classifier.py and
scripts/training/cars_cluster_classifier.sh, 55k iterations, period 50k, lr 1e-3).

  python -m jaxgeal.main --config=configs/cars_classifier.py --workdir=workdirs/cars_classifier \
      --config.gangealing_model=workdirs/cars/model
Append :tiny for the CPU-sized variant (stage 1 from configs/cars.py:tiny).
"""

import ml_collections

from jaxgeal.trainers import cluster_classifier, config_variants


def tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The classifier's schedule at CPU size (the stage-1 networks are already its `tiny` variant)."""
  c.update(total_steps=6, log_every=2, ckpt_every=3)
  c.optim.period = 10
  return c


VARIANTS = {"tiny": tiny}


def get_config(arg=None):
  stage1 = config_variants.sibling(__file__, "cars").get_config(arg)
  c = cluster_classifier.classifier_config(stage1, "workdirs/cars/model")
  return config_variants.apply_variant(c, arg, VARIANTS)
