"""Datasets of jaxgeal: TFDS builders writing array_record without TensorFlow, read back with grain.

Implements what upstream GANgealing's `prepare_data.py` (wpeebles/gangealing at ffa6387) produces, for
  * any image folder (`image_folder`), LSUN categories from the user's download (`lsun`): training images;
  * SPair-71k (`spair`) and CUB-200-2011 (`cub`): key point datasets for PCK-Transfer (paper §4.2, App. B.7).
Pre-processing (`preprocessing`): upstream's `--pad center|zero|border|resize_small_side|none` and the ACSM
CUB crop, PIL LANCZOS resampling, with the exact point map of every step. Build with `build_*` or
`python -m jaxgeal.datasets.prepare {folder,lsun,spair,cub} ...`; read with `jaxgeal.input_pipeline` (training
batches) or `open_keypoint_dataset` (evaluation). Datasets live in `<out>/<builder>/<config>/1.0.0/`.

The key point dataset structure ("jaxgeal.keypoints/1": per-record features and per-dataset metadata),
the coordinate convention and the handling of bad images are specified in docs/datasets.md.
"""

from jaxgeal.datasets.base import DEFAULT_MAX_BAD_FRACTION, BuildReport, MissingDataError, TooManyBadImagesError
from jaxgeal.datasets.cub import build_cub
from jaxgeal.datasets.image_folder import build_image_folder
from jaxgeal.datasets.keypoints import KeypointDataset, open_keypoint_dataset
from jaxgeal.datasets.lsun import build_lsun
from jaxgeal.datasets.reader import PreparedDataSource, open_dataset
from jaxgeal.datasets.spair import build_spair

__all__ = [
  "DEFAULT_MAX_BAD_FRACTION",
  "BuildReport",
  "KeypointDataset",
  "MissingDataError",
  "PreparedDataSource",
  "TooManyBadImagesError",
  "build_cub",
  "build_image_folder",
  "build_lsun",
  "build_spair",
  "open_dataset",
  "open_keypoint_dataset",
]
