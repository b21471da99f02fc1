"""`bandlift train --config FILE --run-dir DIR`: resumes from DIR/last.pt when present."""
from __future__ import annotations

import math
from pathlib import Path

from bandlift.rt.cli.errors import CLIError, in_range, missing_extra


def configure(parser):
    parser.add_argument("--config", help="YAML training config (defaults: bandlift.train.trainer.DEFAULTS)")
    parser.add_argument("--run-dir", required=True, help="folder for checkpoints and metrics; resumes if it has last.pt")
    parser.add_argument("--manifest", help="dataset manifest (overrides data.manifest)")
    parser.add_argument("--steps", type=int, help="total steps (overrides train.steps; 0 with a prior recipe: "
                                                   "its untrained start, judged and saved as best.pt)")
    parser.add_argument("--init", metavar="CKPT", help="fine-tune: start from this checkpoint's weights "
                        "(overrides train.init; ignored when the run resumes)")
    parser.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this long")
    parser.add_argument("--export", metavar="ONNX", help="export the best checkpoint to this ONNX file at the end")


MAX_STEPS = 10**8
WEIGHT = (0.0, 1e6)
# The config's schema beyond the kinds of DEFAULTS' values: each number's range (for a list, each
# element's, and the list's length), and the kind of the keys whose default is None. The model
# section's values are checked for kind here, for range by GeneratorConfig.
RANGES = {
    "data.seconds": (0.01, 60.0), "data.batch_size": (1, 4096), "data.workers": (0, 256),
    "data.valid_clips": (1, 10**6), "data.visqol_clips": (0, 10**6), "data.visqol_seconds": (0.1, 60.0),
    "data.visqol_cutoff_hz": (100.0, 24000.0), "data.visqol_per_source": (0, 10**6),
    "data.source_balance": (0.0, 1.0), "data.lossy_ceiling_hz": (100.0, 24000.0), "data.disc_seconds": (0.01, 60.0),
    "train.steps": (1, MAX_STEPS), "train.lr": (1e-12, 1.0), "train.lr_disc": (1e-12, 1.0),
    "train.betas": (0.0, 0.999999), "train.gan_start": (0, 10**12), "train.ckpt_every": (1, MAX_STEPS),
    "train.valid_every": (1, MAX_STEPS), "train.log_every": (1, MAX_STEPS), "train.seed": (0, 2**32 - 1),
    "train.threads": (1, 1024), "train.max_minutes": (0.01, 60 * 24 * 365),
    "loss.ffts": (16, 1 << 16),  # every other key of `loss` is a term's weight: WEIGHT
}
LENGTHS = {"train.betas": (2, 2), "loss.ffts": (1, 16)}
OPTIONAL = {"data.manifest": str, "train.init": str, "data.lossy_ceiling_hz": float, "train.max_minutes": float}


def _number_problem(name: str, value, like) -> str | None:
    """A number of `like`'s kind (an int where the default is one) within RANGES[name]."""
    integer = isinstance(like, int)
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        return f"{name!r} must be {'an integer' if integer else 'a number'}, got {value!r:.40}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name!r} must be like {like!r}, got {value!r:.40}"
    lo, hi = RANGES.get(name, WEIGHT if name.startswith("loss.") else (-math.inf, math.inf))
    if not lo <= value <= hi:  # Python ints compare exactly: a 400-digit one is simply out of range
        return f"{name!r} must be in [{lo:g}, {hi:g}], got {value!r:.40}"
    return None


def _value_problem(name: str, value, default) -> str | None:
    if default is None:
        if value is None:
            return None
        kind = OPTIONAL.get(name)
        if kind is str:
            return None if isinstance(value, str) else f"{name!r} must be a path (text), got {value!r:.40}"
        return _number_problem(name, value, 0.0) if kind is float else None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"{name!r} must be like {default!r}, got {value!r:.40}"
    if isinstance(default, (int, float)):
        return _number_problem(name, value, default)
    if isinstance(default, list):
        if not isinstance(value, list):
            return f"{name!r} must be like {default!r}, got {value!r:.40}"
        lo, hi = LENGTHS.get(name, (0, 1 << 16))
        if not lo <= len(value) <= hi:
            return f"{name!r} must have {lo}..{hi} elements, got {len(value)}"
        if not default or not isinstance(default[0], (int, float)):
            return None
        return next((p for v in value if (p := _number_problem(name, v, default[0])) is not None), None)
    if not isinstance(value, type(default)):
        return f"{name!r} must be like {default!r}, got {value!r:.40}"
    return None


def config_problems(config, defaults, where: str = "") -> list[str]:
    """Keys the defaults do not know, sections that are not mappings, values of the wrong kind or out
    of range (RANGES, LENGTHS, OPTIONAL)."""
    problems = []
    for key, value in config.items():
        name = f"{where}{key}"
        if key not in defaults:
            problems.append(f"unknown key {name!r}")
            continue
        default = defaults[key]
        if isinstance(default, dict):
            if isinstance(value, dict):
                problems += config_problems(value, default, name + ".")
            else:
                problems.append(f"{name!r} must be a mapping, got {value!r:.40}")
        elif (problem := _value_problem(name, value, default)) is not None:
            problems.append(problem)
    return problems


def read_config(path, overrides: dict) -> dict:
    """The training config (defaults < YAML file < command line), or a one-line CLIError."""
    import yaml

    from bandlift.train.recipes import merge
    from bandlift.train.trainer import DEFAULTS, load_config

    if path is not None and not Path(path).is_file():  # missing, a folder, or a FIFO that blocks
        raise CLIError(f"--config {path}: cannot read it (not a regular file)")
    try:
        config = load_config(path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise CLIError(f"--config {path}: cannot read it ({reason})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise CLIError(f"--config {path}: not valid YAML{where} ({getattr(exc, 'problem', None) or exc})") from None
    except AttributeError:  # the file's top level is a list or a scalar
        raise CLIError(f"--config {path}: must be a mapping of sections ({', '.join(DEFAULTS)})") from None
    problems = config_problems(config, DEFAULTS)
    if problems:
        raise CLIError(f"--config {path}: {'; '.join(problems[:3])}")
    return merge(config, overrides)


def check_manifest(manifest) -> None:
    """Before anything is created: the manifest exists, parses, and has train and valid rows."""
    from bandlift.train.data.sources import TRAINING_FIELDS, read_manifest

    path = Path(manifest).expanduser()
    if not path.is_file():
        raise CLIError(f"manifest not found: {path} (see `bandlift dataset`)")
    splits = {row.get("split", "train") for row in read_manifest(path, TRAINING_FIELDS)}
    missing = [s for s in ("train", "valid") if s not in splits]
    if missing:
        raise CLIError(f"{path}: no {' or '.join(missing)} rows (index more files with `bandlift dataset`)")


def run(args) -> int:
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        raise missing_extra("training", "train") from None
    from bandlift.train.checkpoints import CheckpointError
    from bandlift.train.trainer import Trainer

    if args.steps is not None:
        in_range(args.steps, "--steps", 0, MAX_STEPS)
    if args.max_minutes is not None:
        in_range(args.max_minutes, "--max-minutes", 0.01, 60 * 24 * 365)
    overrides = {"data": {}, "train": {}}
    if args.manifest:
        overrides["data"]["manifest"] = args.manifest
    if args.steps is not None:
        overrides["train"]["steps"] = args.steps
    if args.init:
        overrides["train"]["init"] = args.init
    if args.max_minutes:
        overrides["train"]["max_minutes"] = args.max_minutes
    config = read_config(args.config, overrides)
    if config["train"]["steps"] == 0 and not config["model"].get("prior"):
        raise CLIError("--steps 0 keeps a recipe's untrained start, which only a prior recipe (model.prior: true) "
                       "judges and saves as best.pt; train at least 1 step")
    init = config["train"].get("init")
    if init and not Path(init).is_file():
        raise CLIError(f"--init {init}: no such checkpoint")
    if not config["data"]["manifest"]:
        raise CLIError("no dataset: pass --manifest (see `bandlift dataset`) or set data.manifest in the config")
    check_manifest(config["data"]["manifest"])
    try:
        trainer = Trainer(config, args.run_dir)
    except (CheckpointError, ValueError) as exc:  # a checkpoint, or a config value the model refuses
        raise CLIError(str(exc).splitlines()[0]) from None
    best = trainer.fit()
    print(f"best checkpoint: {best}")
    if args.export:  # through the `export` command, by name: training does not import bandlift.export
        from bandlift.rt.cli import main as cli_main

        return cli_main(["export", str(best), "-o", args.export])
    return 0
