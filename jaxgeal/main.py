"""Entry point for training: `python -m jaxgeal.main --config=configs/cats.py --workdir=DIR` (installed, also
`jaxgeal-train --config=... --workdir=...`).

The config (an ml_collections file; append `:tiny` for the CPU-sized variant) names its trainer; the trainer
reads everything else from it. The config is validated before any work (jaxgeal.trainers.config_checks).
Re-running with the same workdir resumes from the last checkpoint. The workdir may be a bucket path
(gs://bucket/run; needs `pip install 'jaxgeal[gcs]'`).

Several processes (one per host, or several on one host): every process runs the same command with
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (or `--distributed=auto` where JAX detects
the job: Cloud TPU pod slices, SLURM); see jaxgeal/distributed.py and launch/local.py. Only process 0 writes
metrics, images, the exported model and the console's progress; checkpoints are saved by all together.

Console: jaxgeal's own INFO lines (the periodic progress / metric line) and every library's warnings; all of
it, libraries' INFO included, also goes to <workdir>/log.txt.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import logging
import pathlib
import re
import sys

import jax
from absl import app, flags
from ml_collections import config_dict, config_flags

from jaxgeal import cli, compile_cache, distributed, storage
from jaxgeal.trainers import config_checks

TRAINERS = {
  "gangealing": "jaxgeal.trainers.gangealing",
  "stylegan2": "jaxgeal.trainers.stylegan2",
  "cluster_classifier": "jaxgeal.trainers.cluster_classifier",
  "demo": "jaxgeal.trainers.demo",
  "swapae": "jaxgeal.trainers.swapae",
  "swapae_demo": "jaxgeal.trainers.swapae_demo",
}
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
LOG_FILE = "log.txt"

FLAGS = flags.FLAGS


def define_config_flag(flag_values: flags.FlagValues, argv: list[str] | None = None):
  """--config on `flag_values`; `argv` (default sys.argv) is what config_flags reads to define the
  `--config.<field>` overrides."""
  config_flags.DEFINE_config_file(
    "config",
    None,
    "Training config file (e.g. configs/cats.py or configs/cats.py:tiny).",
    flag_values=flag_values,
    lock_config=False,
    sys_argv=argv,
  )


def define_flags(flag_values: flags.FlagValues, argv: list[str] | None = None):
  """--config and --workdir on `flag_values` (see define_config_flag)."""
  define_config_flag(flag_values, argv)
  flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics and visuals (resumes if it has some).", flag_values=flag_values
  )
  flags.DEFINE_string(
    "compilation_cache",
    None,
    "Directory of JAX's persistent compilation cache (default: $JAXGEAL_COMPILATION_CACHE, else "
    "~/.cache/jaxgeal/jax); 'off' turns it off.",
    flag_values=flag_values,
  )
  flags.mark_flags_as_required(["config", "workdir"], flag_values=flag_values)
  define_distributed_flags(flag_values)


def define_distributed_flags(flag_values: flags.FlagValues):
  """The flags that make this process one of a multi-process job (jaxgeal.distributed), and --num_cpu_devices."""
  f = dict(flag_values=flag_values)
  flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0's coordinator (multi-process runs).", **f)
  flags.DEFINE_integer("num_processes", None, "Processes in the job (multi-process runs).", **f)
  flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes).", **f)
  flags.DEFINE_enum(
    "distributed", "off", ["off", "auto"], "auto: join the job JAX detects (Cloud TPU pod slice, SLURM, Open MPI).", **f
  )
  flags.DEFINE_integer("initialization_timeout", 300, "Seconds to wait for the other processes / coordinator.", **f)
  flags.DEFINE_integer(
    "num_cpu_devices", None, "Fake CPU devices in this process (CPU tests of multi-device runs).", **f
  )


def distributed_options(flag_values: flags.FlagValues = FLAGS) -> distributed.Options:
  fv = flag_values
  return distributed.Options(
    coordinator_address=fv.coordinator_address,
    num_processes=fv.num_processes,
    process_id=fv.process_id,
    auto=fv.distributed == "auto",
    cpu_devices=fv.num_cpu_devices,
    timeout_s=fv.initialization_timeout,
  )


define_flags(FLAGS)


class FlagsError(Exception):
  """A command-line mistake, described in one line."""


def config_keys(config, prefix: str = "") -> list[str]:
  """Every field of a config as a dotted path (sub-configs and their leaves)."""
  keys = []
  for key, value in config.items():
    path = f"{prefix}{key}"
    keys.append(path)
    if isinstance(value, (config_dict.ConfigDict, dict)):
      keys += config_keys(value, f"{path}.")
  return keys


def _config_arg(argv: list[str]) -> str | None:
  for arg in argv[1:]:
    if arg.startswith("--config="):
      return arg
  return None


def _parse(flag_values: flags.FlagValues, argv: list[str]) -> list[str]:
  """flag_values(argv) and the config loaded, any mistake as a FlagsError."""
  try:
    rest = flag_values(argv)
    _ = flag_values.config  # config_flags may load the file lazily: its errors belong here
    return rest
  except flags.UnrecognizedFlagError as e:
    raise FlagsError(f"--{e.flagname}: unknown flag (see --help)") from None
  except Exception as e:  # pylint: disable=broad-except  (a config file's own error, e.g. an unknown variant)
    lines = [l.strip() for l in str(e).strip().splitlines() if l.strip()] or [type(e).__name__]
    if len(lines) == 1:
      raise FlagsError(lines[0] if isinstance(e, flags.Error) else f"{_config_arg(argv)}: {lines[0]}") from None
    # config_flags puts the config file's traceback into the message: its last line is the error itself.
    detail = re.sub(r"^[\w.]*(Error|Exception): ", "", lines[-1])
    raise FlagsError(f"{_config_arg(argv) or lines[0]}: {detail}") from None


def _check_override_keys(config_arg: str, argv: list[str]):
  """Each `--config.<key>=...` must name a field of the config; otherwise FlagsError with the nearest ones."""
  keys = [a[len("--config.") :].split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
  if not keys:
    return
  probe = flags.FlagValues()
  define_config_flag(probe, [argv[0], config_arg])
  _parse(probe, [argv[0], config_arg])
  known = config_keys(probe.config)
  for key in keys:
    if key not in known:
      near = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
      hint = f"; did you mean {', '.join('--config.' + k for k in near)}?" if near else ""
      raise FlagsError(f"--config.{key}: the config has no field {key!r}{hint}")


def parse_flags(argv: list[str], flag_values: flags.FlagValues = FLAGS) -> list[str]:
  """absl's flag parsing; a config mistake (missing file, unknown override, value of the wrong type, a broken
  config file) raises FlagsError with one line naming it instead of absl's traceback."""
  config_arg = _config_arg(argv)
  if config_arg is not None:
    path = config_arg[len("--config=") :].split(":", 1)[0]
    if not pathlib.Path(path).is_file():
      raise FlagsError(f"--config={path}: no such config file")
    _check_override_keys(config_arg, argv)
  return _parse(flag_values, argv)


class _ConsoleFilter(logging.Filter):
  """jaxgeal's INFO (its modules log through the root logger or `jaxgeal.*`), and WARNING and above from any
  library: Orbax's and JAX's INFO chatter would scroll the progress away. Records logged with
  extra={"console": False} (long tables) go to the log file only."""

  def filter(self, record):
    if not getattr(record, "console", True):
      return False
    return record.levelno >= logging.WARNING or record.name == "root" or record.name.startswith("jaxgeal")


def configure_console_logging(process: int = 0):
  """Root logger at INFO with one stderr handler filtered by _ConsoleFilter (replacing absl's handler, which
  prints every library's INFO). Processes other than 0 of a multi-process run print warnings and errors only,
  prefixed with their index: process 0 reports the run."""
  root = logging.getLogger()
  for handler in list(root.handlers):
    root.removeHandler(handler)
  console = logging.StreamHandler(sys.stderr)
  console.setFormatter(logging.Formatter(LOG_FORMAT if process == 0 else f"[process {process}] {LOG_FORMAT}"))
  console.addFilter(_ConsoleFilter())
  if process:
    console.setLevel(logging.WARNING)
  root.addHandler(console)
  root.setLevel(logging.INFO)


class _SyncingFileHandler(logging.FileHandler):
  """A FileHandler on a storage.StagedFile's local copy that uploads it (at most every SYNC_SECS) as it logs."""

  def __init__(self, staged: storage.StagedFile):
    super().__init__(staged.local)
    self.staged = staged

  def emit(self, record):
    super().emit(record)
    self.staged.sync()

  def close(self):
    super().close()
    self.staged.close()


@contextlib.contextmanager
def log_to_file(workdir: str | pathlib.Path):
  """Everything logged at INFO and above (libraries included) appended to <workdir>/log.txt while inside; in a
  bucket workdir (gs://...) through a local copy uploaded every storage.SYNC_SECS and on exit."""
  path = storage.as_path(workdir)
  path.mkdir(parents=True, exist_ok=True)
  if storage.is_remote(path):
    handler = _SyncingFileHandler(storage.StagedFile(path / LOG_FILE))
  else:
    handler = logging.FileHandler(path / LOG_FILE)
  handler.setFormatter(logging.Formatter(f"%(name)s {LOG_FORMAT}"))
  root = logging.getLogger()
  root.addHandler(handler)
  # absl's logger (orbax, clu) gets its own level from absl's --verbosity once flags are parsed: WARNING by
  # default unless absl's handler was installed first. Both let INFO through while inside.
  loggers = [root, logging.getLogger("absl")]
  levels = [logger.level for logger in loggers]
  root.setLevel(min(levels[0], logging.INFO) if levels[0] else logging.INFO)
  loggers[1].setLevel(min(levels[1], logging.INFO) if levels[1] else logging.NOTSET)
  try:
    yield
  finally:
    root.removeHandler(handler)
    for logger, level in zip(loggers, levels):
      logger.setLevel(level)
    handler.close()


def run(config, workdir: str):
  """Validate the config (ConfigError names the field), then train with its trainer. In a multi-process run
  only process 0 writes <workdir>/log.txt."""
  config_checks.validate(config)
  with log_to_file(workdir) if distributed.is_primary() else contextlib.nullcontext():
    return importlib.import_module(TRAINERS[config.get("trainer", "gangealing")]).train_and_evaluate(config, workdir)


# absl's help flags (app.define_help_flags) print the usage and exit with status 1; asked for, help is a success.
HELP_FLAGS = re.compile(r"--?(help|helpshort|helpfull|\?)")


def _flags_parser(argv: list[str]) -> list[str]:
  try:
    return parse_flags(argv)
  except FlagsError as e:
    cli.print_error(e)
    sys.exit(2)
  except SystemExit as e:
    flags_given = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
    if e.code == 1 and any(HELP_FLAGS.fullmatch(a) for a in flags_given):
      sys.exit(0)
    raise


def main(argv):
  del argv
  configure_console_logging()
  try:
    distributed.initialize(distributed_options())  # Before JAX starts: it may set the CPU device count.
  except distributed.DistributedError as e:
    cli.print_error(e)
    return 2
  configure_console_logging(jax.process_index())
  compile_cache.enable(FLAGS.compilation_cache)  # A resumed run reads its compiled steps back: starts in seconds.
  if jax.process_count() > 1:
    logging.info("%s", distributed.describe())
  try:
    cli.check_output_dir(FLAGS.workdir, "--workdir")  # A file in the way, before anything compiles.
    run(FLAGS.config, FLAGS.workdir)
  except (OSError, ValueError) as e:  # OSError: an unwritable or missing path, named in one line.
    cli.print_error(cli.error_line(e))
    return 2
  return 0


def console_main():
  """`python -m jaxgeal.main` and the `jaxgeal-train` console script: parses sys.argv and exits with main's code."""
  if __name__ != "__main__":
    # A console script's __main__ is its wrapper, while absl's --help shows __main__'s docstring and the flags
    # defined by the program sys.argv[0] names: give it this module's.
    sys.modules["__main__"].__doc__ = sys.modules["__main__"].__doc__ or __doc__
    for name in ("config", "workdir", "coordinator_address", "num_processes", "process_id", "distributed"):
      FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])
  app.run(main, flags_parser=_flags_parser)


if __name__ == "__main__":
  console_main()
