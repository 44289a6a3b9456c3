"""PCK-Transfer of a trained GANgealing model (Peebles et al., CVPR 2022, §4.2; appendices B.4 and B.7).

The model side of `python -m jaxgeal.evaluation.pck --model DIR`: load the STN (`jaxgeal.align.Aligner`), bring
the annotated images to its input size, and transfer every pair's key points through the congealed frame
(congeal A's points, uncongeal them into B), with test-time flipping as upstream's `applications/pck.py`:

    aligner = Aligner.load(model_dir)
    results = evaluate_model(aligner, dataset, pairs="fixed", num_bootstrap=100)   # SPair protocol
    results = evaluate_model(aligner, dataset, pairs="random", both_ways=True)     # CUB protocol

Flips: `flip_fn` asks the aligner which images it mirrors (the smoother residual flow, B.4; the cluster
classifier for K > 1) and `metric.pck_transfer` then scores those images mirrored, with mirrored annotations; the
transfer itself runs on the already-mirrored images, with flipping off for one-head models so that the
decision is not taken twice.

Resizing: upstream evaluates datasets prepared at the model's resolution (key points scaled with the pixels).
Square images of another size are resized here, their key points, boxes and thresholds scaled alike (pixel
centres at integers: x -> (x + 0.5) s - 0.5); non-square images must be prepared first (`python -m
jaxgeal.datasets.prepare`, which pads or crops as upstream and moves the annotations with the pixels).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxgeal.evaluation import annotations, metric


def transfer_functions(aligner, flip: bool = True):
  """(transfer_fn, flip_fn) for `metric.pck_transfer`; flip_fn is None without flip inference."""
  from jaxgeal.align import Aligner  # pylint: disable=g-import-not-at-top

  flips = flip and (aligner.flip or aligner.num_heads > 1)
  runner = aligner
  if flips and aligner.num_heads == 1:
    runner = Aligner(
      aligner.stn,
      aligner.variables,
      aligner.config,
      iters=aligner.iters,
      padding_mode=aligner.padding_mode,
      flip=False,
      batch_size=aligner.batch_size,
    )

  def transfer_fn(images_a, images_b, kps_a):
    return runner.transfer_points(np.asarray(images_a), np.asarray(images_b), np.asarray(kps_a))

  def flip_fn(images):
    return aligner.congeal(np.asarray(images))["flipped"]

  return transfer_fn, (flip_fn if flips else None)


def _scale_annotations(ds: dict, i: int, factor: float):
  """Scales image i's pixel annotations by `factor` (pixel centres at integers)."""
  ds["keypoints"][i] = (ds["keypoints"][i] + 0.5) * factor - 0.5
  if ds.get("bbox") is not None:  # Box edges are pixel boundaries: x0 - 0.5 ... x1 + 0.5 in centre units.
    ds["bbox"][i] = (ds["bbox"][i] + 0.5) * factor - 0.5
  if ds.get("pck_threshold") is not None:
    ds["pck_threshold"][i] = ds["pck_threshold"][i] * factor


def fit_to_model(dataset, size: int) -> dict:
  """The dataset with (N, size, size, 3) images; square images of another size are resized (bicubic) and
  their annotations scaled. Raises ValueError naming the first non-square image."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  ds = dict(annotations.as_dataset(dataset))
  images = ds.get("images")
  if images is None:
    raise ValueError(
      "running a model needs the images: annotations with image 'file' entries or a prepared key point dataset"
    )
  names = ds.get("files") or [f"image {i}" for i in range(len(images))]
  kps, vis = annotations.keypoints_and_visibility(ds)
  ds["keypoints"], ds["visibility"] = np.where(vis[..., None], kps, np.nan), vis
  for key in ("bbox", "pck_threshold"):
    if ds.get(key) is not None:
      ds[key] = np.array(ds[key], np.float64)
  sizes, out = [], np.empty((len(images), size, size, 3), np.float32)
  for i in range(len(images)):
    im = np.asarray(images[i], np.float32)
    h, w = im.shape[:2]
    sizes.append((h, w))
    if h != w:
      raise ValueError(
        f"{names[i]} is {h}x{w}: the model takes square {size}x{size} images. Prepare the "
        f"dataset at {size} px first (python -m jaxgeal.datasets.prepare ... --size {size}), which "
        "pads or crops as upstream and moves the key points with the pixels"
      )
    if h != size:
      pil = Image.fromarray(np.clip(np.rint((im + 1) * 127.5), 0, 255).astype(np.uint8))
      im = np.asarray(pil.resize((size, size), Image.BICUBIC), np.float32) / 127.5 - 1.0
      _scale_annotations(ds, i, size / h)
    out[i] = im
  ds["images"], ds["image_sizes"] = out, np.full((len(out), 2), size, np.int32)
  ds["source_image_sizes"] = np.asarray(sizes, np.int32)
  return ds


def evaluate_model(
  aligner,
  dataset,
  alphas: Sequence[float] = metric.DEFAULT_ALPHAS,
  pairs: str | None = None,
  num_pairs: int | None = None,
  both_ways: bool = False,
  num_bootstrap: int = 0,
  seed: int = 0,
  threshold: str | None = None,
  flip: bool = True,
  progress: bool = False,
) -> dict:
  """PCK-Transfer of `aligner` on `dataset` (a mapping with images, a `KeypointDataset`, or
  `annotations.load_annotations(..., load_images=True)`); pairs default to the dataset's fixed pairs, else random.
  The result also records the model's test-time settings (`model_settings`)."""
  ds = fit_to_model(dataset, aligner.size)
  pairs = pairs or ("fixed" if ds.get("pairs") is not None and len(ds["pairs"]) else "random")
  transfer_fn, flip_fn = transfer_functions(aligner, flip)
  bar = None
  if progress:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top

    rows = len(metric.sample_pairs(len(ds["keypoints"]), pairs, ds.get("pairs"), num_pairs, seed))
    bar, inner = tqdm(total=rows * (2 if both_ways else 1), desc="PCK-Transfer", unit="pair"), transfer_fn

    def transfer_fn(images_a, images_b, kps_a):
      out = inner(images_a, images_b, kps_a)
      bar.update(len(kps_a))
      return out

  try:
    res = metric.pck_transfer(
      transfer_fn,
      ds,
      alphas,
      pairs=pairs,
      num_pairs=num_pairs,
      both_ways=both_ways,
      num_bootstrap=num_bootstrap,
      seed=seed,
      threshold=threshold,
      flip_fn=flip_fn,
      batch_size=aligner.batch_size,
    )
  finally:
    if bar is not None:
      bar.close()
  res["model_settings"] = {
    "input_size": int(aligner.size),
    "transforms": list(aligner.transforms),
    "iters": int(aligner.iters),
    "padding_mode": aligner.padding_mode,
    "flip": flip_fn is not None,
    "num_heads": int(aligner.num_heads),
  }
  return res


def run_cli(args) -> dict:
  """`python -m jaxgeal.evaluation.pck --model DIR (--annotations A | --dataset D)`: the results JSON."""
  from jaxgeal.align import Aligner  # pylint: disable=g-import-not-at-top

  aligner = Aligner.load(args.model, iters=args.iters, padding_mode=args.padding_mode, flip=not args.no_flip)
  if args.dataset:
    from jaxgeal.datasets import keypoints  # pylint: disable=g-import-not-at-top

    dataset, source = keypoints.open_keypoint_dataset(args.dataset, args.split), str(args.dataset)
  else:
    dataset, source = annotations.load_annotations(args.annotations, load_images=True), str(args.annotations)
  res = evaluate_model(
    aligner,
    dataset,
    args.alphas,
    pairs=args.pairs,
    num_pairs=args.num_pck_pairs,
    both_ways=args.transfer_both_ways,
    num_bootstrap=args.num_bootstrap,
    seed=args.seed,
    threshold=args.threshold,
    flip=not args.no_flip,
    progress=True,
  )
  res.update(model=str(args.model), dataset=source)
  return res
