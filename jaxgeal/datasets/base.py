"""What every jaxgeal dataset builder shares: TF-free array_record writing, bad-image accounting, build reports.

The builders replace upstream `prepare_data.py`'s LMDB output (wpeebles/gangealing at ffa6387) with TFDS datasets in
the array_record format, read back by grain. Everything here runs without TensorFlow (tfds 4.9.10 checked):

  * `tfds.core.GeneratorBasedBuilder.download_and_prepare(file_format="array_record")` serialises examples
    with tfds' own protobuf serializer; image features are handed over as already-encoded PNG/JPEG *bytes*
    (encoded here with PIL), since encoding numpy arrays is the one step that would call `tf.image`.
  * The data is the user's (`manual_dir`, tfds' mechanism for manually downloaded data); nothing is fetched.
  * Builds are written to an `incomplete.*` folder that tfds renames only on success, so a build that fails
    (e.g. too many bad images) leaves no dataset behind.
  * `disable_shuffling=True` with integer keys 0..N-1 makes record i the i-th example generated, which is what
    lets SPair's pair lists refer to records by index (`grain` shuffles at read time anyway).
  * Dataset-level data (pairs, key point permutation, the build report) goes to `DatasetInfo.metadata`,
    i.e. `metadata.json` beside the records, which `tfds.builder_from_directory` reads back.

Bad images: a file that cannot be decoded is logged, named in the `BuildReport` and skipped. If more than
`max_bad_fraction` (default 1%) of the candidate images are bad, the build fails with `TooManyBadImagesError`,
so a dataset never silently shrinks past that limit. Once the limit is passed nothing more is written, but
every remaining image is still read, so the error counts all bad images (and names the first ten; every one
is in the log) and one pass finds everything to fix. A failed build leaves no directory it created behind;
directories that existed before are never removed.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import io
import json
import logging
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from jaxgeal.datasets import preprocessing

log = logging.getLogger(__name__)

FILE_FORMAT = "array_record"
DEFAULT_MAX_BAD_FRACTION = 0.01
IMAGE_FORMATS = ("png", "jpeg")
_MAX_LISTED = 10  # Bad names quoted in an error message.


class TooManyBadImagesError(RuntimeError):
  """More than `max_bad_fraction` of the source images could not be read."""


class MissingDataError(FileNotFoundError):
  """The manually downloaded data is not where the builder looks (message says how to get it)."""


@dataclasses.dataclass
class BuildReport:
  """What a build produced: where, how many examples per split, and which source images were skipped."""

  path: str  # The dataset directory (`.../<builder>/<config>/<version>`).
  num_examples: dict[str, int]
  num_candidates: int  # Source images looked at.
  bad_images: list[tuple[str, str]]  # (name, error) of every skipped image.
  warnings: list[str] = dataclasses.field(default_factory=list)
  reused: bool = False  # True: an existing dataset was found and not rebuilt.

  def to_json(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["bad_images"] = [list(b) for b in self.bad_images]
    return d

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> BuildReport:
    d = dict(d)
    d["bad_images"] = [tuple(b) for b in d.get("bad_images", [])]
    return cls(**d)

  def summary(self) -> str:
    counts = ", ".join(f"{k}: {v}" for k, v in self.num_examples.items())
    lines = [
      f"{self.path}: {counts} examples from {self.num_candidates} images"
      + (" (existing dataset reused)" if self.reused else "")
    ]
    if self.bad_images:
      lines.append(f"{len(self.bad_images)} unreadable image(s) skipped:")
      lines += [f"  {name}: {err}" for name, err in self.bad_images[:_MAX_LISTED]]
      if len(self.bad_images) > _MAX_LISTED:
        lines.append(f"  ... and {len(self.bad_images) - _MAX_LISTED} more (see metadata.json)")
    lines += [f"warning: {w}" for w in self.warnings]
    return "\n".join(lines)


class BadImageTracker:
  """Counts unreadable images; `finish()` fails if their share of `total` exceeds `max_bad_fraction`.

  `total` is known before decoding starts (files are listed first), so `failed` turns True with the first bad
  image past the limit: builders then stop writing examples and only keep reading to count the bad ones.
  """

  def __init__(self, total: int, max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION):
    if not 0.0 <= max_bad_fraction <= 1.0:
      raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
    self.total = total
    self.max_bad_fraction = max_bad_fraction
    self.bad: list[tuple[str, str]] = []

  @property
  def failed(self) -> bool:
    return len(self.bad) > self.max_bad_fraction * self.total

  def add(self, name: str, error: BaseException | str):
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    log.warning("skipping unreadable image %s (%s)", name, message)
    self.bad.append((name, message))

  def finish(self):
    """Raises TooManyBadImagesError (count, the first ten names) if too many images were bad."""
    if not self.failed:
      return
    listed = "\n".join(f"  {n}: {e}" for n, e in self.bad[:_MAX_LISTED])
    more = len(self.bad) - _MAX_LISTED
    listed += f"\n  ... and {more} more (each named in the warnings above)" if more > 0 else ""
    raise TooManyBadImagesError(
      f"{len(self.bad)} of {self.total} images are unreadable, more than max_bad_fraction="
      f"{self.max_bad_fraction:g} allows; nothing was built:\n{listed}\n"
      "Fix or remove these files, or raise max_bad_fraction (--max_bad_fraction) to accept the loss."
    )


def decode_image(data: bytes) -> np.ndarray:
  """PNG/JPEG/WebP/... bytes -> uint8 (H, W, 3); raises (OSError, ...) on unreadable data."""
  with Image.open(io.BytesIO(data)) as im:
    return preprocessing.to_rgb_array(im)


def read_image(path: str | os.PathLike) -> np.ndarray:
  with Image.open(path) as im:
    return preprocessing.to_rgb_array(im)


def encode_image(image: np.ndarray, image_format: str = "png", jpeg_quality: int = 100) -> bytes:
  """uint8 (H, W, 3) -> bytes. JPEG quality 100 as upstream; PNG is lossless (upstream's default format)."""
  buf = io.BytesIO()
  if image_format == "png":
    Image.fromarray(image).save(buf, format="PNG")
  elif image_format == "jpeg":
    Image.fromarray(image).save(buf, format="JPEG", quality=jpeg_quality)
  else:
    raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
  return buf.getvalue()


def ordered_map(
  fn: Callable[[Any], Any], items: Iterable[Any], num_workers: int
) -> Iterator[tuple[Any, Any, BaseException | None]]:
  """Yields (item, fn(item), None) or (item, None, error) in input order, `num_workers` threads at a time.

  Threads suffice: PIL releases the GIL while decoding, resampling and encoding. At most 4 * num_workers
  items are in flight, so memory stays bounded on million-image builds.
  """

  def call(item):
    try:
      return fn(item), None
    except Exception as e:  # pylint: disable=broad-except  -- any failure marks this one image bad.
      return None, e

  if num_workers <= 1:
    for item in items:
      yield (item, *call(item))
    return
  window: collections.deque = collections.deque()
  with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
    for item in items:
      window.append((item, pool.submit(call, item)))
      if len(window) >= 4 * num_workers:
        item0, fut = window.popleft()
        yield (item0, *fut.result())
    while window:
      item0, fut = window.popleft()
      yield (item0, *fut.result())


def mirror_permutation(names: Sequence[str]) -> list[int]:
  """Key point permutation for horizontal flips: swaps every 'left ...' with its 'right ...' by name."""
  index = {n.lower(): i for i, n in enumerate(names)}
  perm = []
  for n in names:
    low = n.lower()
    other = low.replace("left", "\0").replace("right", "left").replace("\0", "right")
    perm.append(index.get(other, index[low]))
  return perm


@dataclasses.dataclass(eq=False)
class PreparedConfig(tfds.core.BuilderConfig):
  """Options shared by all builders. `name` is derived from the options that change the data."""

  name: str = ""
  size: int = 256
  pad: str = "center"
  image_format: str = "png"
  jpeg_quality: int = 100
  max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION
  max_images: int | None = None
  num_workers: int = min(8, os.cpu_count() or 1)

  def __post_init__(self):
    if self.pad not in self.allowed_pads():
      raise ValueError(f"pad must be one of {self.allowed_pads()}, got {self.pad!r}")
    if self.image_format not in IMAGE_FORMATS:
      raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {self.image_format!r}")
    if self.size <= 0:
      raise ValueError(f"size must be positive, got {self.size}")
    if not self.name:
      self.name = "_".join(self.name_parts())

  def allowed_pads(self) -> tuple[str, ...]:
    return preprocessing.PAD_MODES

  def name_parts(self) -> list[str]:
    parts = [str(self.size), self.pad]
    return parts + ([self.image_format] if self.image_format != "png" else [])

  def options(self) -> dict[str, Any]:
    """The data-defining options, stored in metadata.json."""
    skip = {"name", "version", "release_notes", "supported_versions", "description", "tags", "num_workers"}
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}


class PreparedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the jaxgeal builders. Subclasses define `_features`, `_split_sources` and `_examples`.

  Builders are not registered in tfds' global registry (names could clash with tfds' own `lsun` etc.); build
  them with `build()` and read them with `jaxgeal.datasets.reader.open_dataset(path)`.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First jaxgeal release."}
  BUILDER_CONFIG_CLS = PreparedConfig

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    # tfds looks for a url-checksums file next to the builder's code; for a builder inside a package it probes
    # `importlib_resources`, which tfds only installs on Python < 3.9 (ModuleNotFoundError here). Nothing is
    # downloaded by these builders, so there is no checksums file to find.
    return None

  def __init__(self, *, config: PreparedConfig, **kwargs):
    super().__init__(config=config, **kwargs)
    self._report_bad: list[tuple[str, str]] = []
    self._report_warnings: list[str] = []
    self._report_candidates = 0

  # --- to implement -----------------------------------------------------------------------------------------
  def _features(self) -> dict[str, Any]:
    raise NotImplementedError

  def _split_sources(self, manual_dir: pathlib.Path) -> dict[str, Any]:
    """{split name: whatever `_examples` needs}; raise MissingDataError when the data is not there."""
    raise NotImplementedError

  def _examples(self, source: Any, tracker: BadImageTracker) -> Iterator[dict[str, Any]]:
    raise NotImplementedError

  def _num_candidates(self, source: Any) -> int:
    return len(source)

  def _extra_metadata(self) -> dict[str, Any]:
    return {}

  # --- tfds plumbing ----------------------------------------------------------------------------------------
  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=self.__doc__,
      features=tfds.features.FeaturesDict(self._features()),
      metadata=tfds.core.MetadataDict(),
      disable_shuffling=True,
    )

  def _image_feature(self, square: bool | None = None) -> tfds.features.Image:
    """The image feature; its shape is static where the pad mode (or `square=True`) gives size x size."""
    cfg = self.builder_config
    shape = (cfg.size, cfg.size, 3) if square else preprocessing.output_shape(cfg.size, cfg.pad)
    return tfds.features.Image(shape=shape, encoding_format=cfg.image_format)

  def _split_generators(self, dl_manager):
    sources = self._split_sources(pathlib.Path(dl_manager.manual_dir))
    return {split: self._generate_examples(source) for split, source in sources.items()}

  def _generate_examples(self, source):
    cfg = self.builder_config
    total = self._num_candidates(source)
    self._report_candidates += total
    tracker = BadImageTracker(total, cfg.max_bad_fraction)
    key = 0
    for example in self._examples(source, tracker):
      if not tracker.failed:  # Past the limit the build is lost: only read on, to count the bad images.
        yield key, example
        key += 1
    tracker.finish()
    self._report_bad += tracker.bad
    # The last split generator to finish leaves the complete report; tfds writes metadata after all splits.
    self.info.metadata.update(self._extra_metadata())
    self.info.metadata["options"] = cfg.options()
    self.info.metadata["build_report"] = {
      "num_candidates": self._report_candidates,
      "bad_images": [list(b) for b in self._report_bad],
      "warnings": list(self._report_warnings),
    }

  def warn(self, message: str):
    log.warning("%s", message)
    self._report_warnings.append(message)

  def encode(self, image: np.ndarray) -> bytes:
    return encode_image(image, self.builder_config.image_format, self.builder_config.jpeg_quality)


def build(
  builder_cls: type[PreparedBuilder],
  config: PreparedConfig,
  manual_dir: str | os.PathLike,
  out_dir: str | os.PathLike,
  *,
  overwrite: bool = False,
) -> BuildReport:
  """Builds (or, unless `overwrite`, reuses) `builder_cls(config)` from `manual_dir` into `out_dir`.

  The dataset lands in `out_dir/<builder name>/<config name>/<version>/` (`BuildReport.path`).
  """
  manual_dir = pathlib.Path(manual_dir).expanduser()
  if not manual_dir.is_dir():
    raise MissingDataError(
      f"{manual_dir} does not exist or is not a directory.\n{builder_cls.MANUAL_DOWNLOAD_INSTRUCTIONS}"
    )
  if not any(manual_dir.iterdir()):  # tfds would fail with an AssertionError.
    raise MissingDataError(f"{manual_dir} is empty: no images found.\n{builder_cls.MANUAL_DOWNLOAD_INSTRUCTIONS}")
  builder = builder_cls(config=config, data_dir=os.fspath(out_dir), file_format=FILE_FORMAT)
  # The topmost directory this build creates, removed again if the build fails (nothing in it predates us).
  created = None
  for d in [pathlib.Path(builder.data_dir), *pathlib.Path(builder.data_dir).parents]:
    if d.exists():
      break
    created = d
  try:
    return _build(builder, config, manual_dir, overwrite)
  except BaseException:
    if created is not None and created.exists():
      shutil.rmtree(created, ignore_errors=True)
    raise


def _build(builder: PreparedBuilder, config: PreparedConfig, manual_dir: pathlib.Path, overwrite: bool) -> BuildReport:
  reused = builder.is_prepared() and not overwrite
  if reused:
    # Options outside the config name (a glob, max_images, ...) could differ: never hand back the wrong data.
    # (max_bad_fraction only decides whether a build is accepted, so it may differ.)
    stored = dict(tfds.builder_from_directory(builder.data_dir).info.metadata or {}).get("options")
    wanted = _jsonable(config.options())
    if stored is not None and {**stored, "max_bad_fraction": None} != {**wanted, "max_bad_fraction": None}:
      raise ValueError(
        f"{builder.data_dir} was built with options {stored}, not {wanted}; "
        "pass overwrite=True (--overwrite) or choose another output directory."
      )
  else:
    mode = (
      tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
      if overwrite
      else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    )
    # tfds creates an (unused) downloads folder; keep it out of the user's output directory.
    with tempfile.TemporaryDirectory(prefix="jaxgeal_tfds_") as tmp:
      builder.download_and_prepare(
        download_dir=tmp,
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir), download_mode=mode),
      )
  report = report_from_directory(builder.data_dir, reused=reused)
  log.info("%s", report.summary())
  return report


def _jsonable(value):
  """`value` as it reads back from metadata.json (tuples become lists)."""
  return json.loads(json.dumps(value))


def report_from_directory(path: str | os.PathLike, reused: bool = False) -> BuildReport:
  builder = tfds.builder_from_directory(os.fspath(path))
  meta = dict(builder.info.metadata or {})
  rep = meta.get("build_report", {})
  return BuildReport(
    path=os.fspath(path),
    num_examples={k: v.num_examples for k, v in builder.info.splits.items()},
    num_candidates=rep.get("num_candidates", 0),
    bad_images=[tuple(b) for b in rep.get("bad_images", [])],
    warnings=list(rep.get("warnings", [])),
    reused=reused,
  )
