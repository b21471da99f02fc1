"""`bandlift train --config FILE --run-dir DIR`: resumes from DIR/last.pt when present."""
from __future__ import annotations

import math
from pathlib import Path

from bandlift.rt.cli.errors import CLIError, in_range, missing_extra


def configure(parser):
    parser.add_argument("--config", help="YAML training config (defaults: bandlift.train.trainer.DEFAULTS)")
    parser.add_argument("--run-dir", required=True, help="folder for checkpoints and metrics; resumes if it has last.pt")
    parser.add_argument("--manifest", help="dataset manifest (overrides data.manifest)")
    parser.add_argument("--steps", type=int, help="total steps (overrides train.steps)")
    parser.add_argument("--init", metavar="CKPT", help="fine-tune: start from this checkpoint's weights "
                        "(overrides train.init; ignored when the run resumes)")
    parser.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this long")
    parser.add_argument("--export", metavar="ONNX", help="export the best checkpoint to this ONNX file at the end")


MAX_STEPS = 10**8


def config_problems(config, defaults, where: str = "") -> list[str]:
    """Keys the defaults do not know, sections that are not mappings, values of the wrong kind."""
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
        elif default is None:
            continue
        elif isinstance(default, bool) != isinstance(value, bool) or (
                isinstance(default, (int, float)) and not isinstance(value, (int, float))
                or isinstance(default, (int, float)) and not math.isfinite(value)
                or isinstance(default, (str, list)) and not isinstance(value, type(default))):
            problems.append(f"{name!r} must be like {default!r}, got {value!r:.40}")
    return problems


def read_config(path, overrides: dict) -> dict:
    """The training config (defaults < YAML file < command line), or a one-line CLIError."""
    import yaml

    from bandlift.train.trainer import DEFAULTS, load_config, merge

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
    from bandlift.train.data_sources import TRAINING_FIELDS, DataError, read_manifest

    path = Path(manifest).expanduser()
    if not path.is_file():
        raise CLIError(f"manifest not found: {path} (see `bandlift dataset`)")
    try:
        splits = {row.get("split", "train") for row in read_manifest(path, TRAINING_FIELDS)}
    except DataError as exc:
        raise CLIError(str(exc)) from None
    missing = [s for s in ("train", "valid") if s not in splits]
    if missing:
        raise CLIError(f"{path}: no {' or '.join(missing)} rows (index more files with `bandlift dataset`)")


def run(args) -> int:
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        raise missing_extra("training", "train") from None
    from bandlift.train.data_sources import DataError
    from bandlift.train.trainer import CheckpointError, Trainer

    if args.steps is not None:
        in_range(args.steps, "--steps", 1, MAX_STEPS)
    if args.max_minutes is not None:
        in_range(args.max_minutes, "--max-minutes", 0.01, 60 * 24 * 365)
    overrides = {"data": {}, "train": {}}
    if args.manifest:
        overrides["data"]["manifest"] = args.manifest
    if args.steps:
        overrides["train"]["steps"] = args.steps
    if args.init:
        overrides["train"]["init"] = args.init
    if args.max_minutes:
        overrides["train"]["max_minutes"] = args.max_minutes
    config = read_config(args.config, overrides)
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
    try:
        best = trainer.fit()
    except DataError as exc:
        raise CLIError(str(exc)) from None
    print(f"best checkpoint: {best}")
    if args.export:  # through the `export` command, by name: training does not import bandlift.export
        from bandlift.rt.cli import main as cli_main

        return cli_main(["export", str(best), "-o", args.export])
    return 0
