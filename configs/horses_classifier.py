"""Second stage for the K=4 horses model: the cluster classifier, with the cars classifier's settings
(configs/cars_classifier.py; upstream has no horses script).

  python -m jaxgeal.main --config=configs/horses_classifier.py --workdir=workdirs/horses_classifier \
      --config.gangealing_model=workdirs/horses/model
Append :tiny for the CPU-sized variant (stage 1 from configs/horses.py:tiny).
"""

from jaxgeal.trainers import cluster_classifier, config_variants


def get_config(arg=None):
  stage1 = config_variants.sibling(__file__, "horses").get_config(arg)
  c = cluster_classifier.classifier_config(stage1, "workdirs/horses/model")
  return config_variants.apply_variant(c, arg, config_variants.sibling(__file__, "cars_classifier").VARIANTS)
