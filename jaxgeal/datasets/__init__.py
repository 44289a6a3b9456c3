"""Datasets of jaxgeal: TFDS builders writing array_record without TensorFlow, read back with grain.

Implements what upstream GANgealing's `prepare_data.py` (docs/upstream.md §1.2, §1.11) produces, for
  * any image folder (`image_folder`), LSUN categories from the user's download (`lsun`): training images;
  * SPair-71k (`spair`) and CUB-200-2011 (`cub`): key point datasets for PCK-Transfer (paper §4.2, App. B.7).
Pre-processing (`preprocessing`): upstream's `--pad center|zero|border|resize_small_side|none` and the ACSM
CUB crop, PIL LANCZOS resampling, with the exact point map of every step. Build with `build_*` or
`python -m jaxgeal.datasets.prepare {folder,lsun,spair,cub} ...`; read with `jaxgeal.input_pipeline` (training
batches) or `open_keypoint_dataset` (evaluation). Datasets live in `<out>/<builder>/<config>/1.0.0/`.

Key point dataset structure ("jaxgeal.keypoints/1"; SPair, CUB, and the synthetic / PCK code that shares it)
--------------------------------------------------------------------------------------------------------------
Coordinates are pixels of the *stored* image, (x, y), pixel centres at integers (pixel (i, j) spans
[i - 0.5, i + 0.5] x [j - 0.5, j + 0.5]; the convention of `jaxgeal.ops.points`).

Per record (one image; TFDS features, `keypoints.keypoint_features`):
  image          uint8 (S, S, 3), PNG/JPEG-encoded on disk; float32 [-1, 1] once through the input pipeline.
  name           str, the source file (SPair: "<category>/<file>", CUB: "<class dir>/<file>").
  keypoints      float32 (P, 2) xy; (0, 0) where not visible. P is fixed per dataset.
  visibility     bool (P,).
  bbox           float32 (4,) x1, y1, x2, y2 of the object box (SPair: the pair annotation's box; CUB: the
                 tight box of bounding_boxes.txt / ACSM's .mat), same coordinates as the key points.
  pck_threshold  float32, the PCK radius for alpha = 1, in stored pixels; a transferred point is correct if
                 ||pred - gt|| <= alpha * pck_threshold of the *target* record.
                 SPair ("bbox"): max(x2 - x1, y2 - y1) of the box (alpha_bbox); CUB ("image"): max(H, W).
  original_size  int32 (2,) (H, W) of the source image.
  transform      float32 (4,) (sx, sy, tx, ty): stored = (sx * x + tx, sy * y + ty) of source pixels;
                 `preprocessing.Affine.from_array(t).inverse()` maps predictions back (upstream's
                 `inverse_coordinates.pt`).

Per dataset (metadata.json beside the records, `keypoints.dataset_metadata`):
  structure       "jaxgeal.keypoints/1".
  keypoint_names  [P] str (SPair: the category's key point ids; CUB: parts.txt names).
  permutation     [P] int or null. Mirror permutation: after flipping an image horizontally (x -> W - 1 - x),
                  keypoints_flipped = keypoints[permutation] (left/right parts swapped; an involution).
                  null = unknown: do not flip-permute (see `keypoints.flip_keypoints`).
  pairs           {split: [[source, target], ...] record indices, or null}. SPair: the fixed pairs of the
                  split, records (2k, 2k + 1), transferred one way. CUB: null (upstream samples 10,000 random
                  pairs and transfers both ways) unless a seeded list was asked for (`num_pairs`).
  threshold       "bbox" | "image": what pck_threshold measures.
  options, build_report (num_candidates, bad_images [[name, error]], warnings), and builder extras
  (SPair: keypoint_ids).

Bad images: unreadable files are skipped, logged and listed in the build report; more than
`max_bad_fraction` (default 1%) of them fails the build (`TooManyBadImagesError`).
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
