"""`bandlift train --config FILE --run-dir DIR`: resumes from DIR/last.pt when present."""
from __future__ import annotations

from pathlib import Path

from bandlift.rt.cli.errors import CLIError, missing_extra


def configure(parser):
    parser.add_argument("--config", help="YAML training config (defaults: bandlift.train.trainer.DEFAULTS)")
    parser.add_argument("--run-dir", required=True, help="folder for checkpoints and metrics; resumes if it has last.pt")
    parser.add_argument("--manifest", help="dataset manifest (overrides data.manifest)")
    parser.add_argument("--steps", type=int, help="total steps (overrides train.steps)")
    parser.add_argument("--init", metavar="CKPT", help="fine-tune: start from this checkpoint's weights "
                        "(overrides train.init; ignored when the run resumes)")
    parser.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this long")
    parser.add_argument("--export", metavar="ONNX", help="export the best checkpoint to this ONNX file at the end")


def run(args) -> int:
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        raise missing_extra("training", "train") from None
    from bandlift.train.trainer import CheckpointError, Trainer, load_config

    overrides = {"data": {}, "train": {}}
    if args.manifest:
        overrides["data"]["manifest"] = args.manifest
    if args.steps:
        overrides["train"]["steps"] = args.steps
    if args.init:
        overrides["train"]["init"] = args.init
    if args.max_minutes:
        overrides["train"]["max_minutes"] = args.max_minutes
    config = load_config(args.config, overrides)
    init = config["train"].get("init")
    if init and not Path(init).is_file():
        raise CLIError(f"--init {init}: no such checkpoint")
    if not config["data"]["manifest"]:
        raise CLIError("no dataset: pass --manifest (see `bandlift dataset`) or set data.manifest in the config")
    try:
        trainer = Trainer(config, args.run_dir)
    except CheckpointError as exc:
        raise CLIError(str(exc)) from None
    best = trainer.fit()
    print(f"best checkpoint: {best}")
    if args.export:  # through the `export` command, by name: training does not import bandlift.export
        from bandlift.rt.cli import main as cli_main

        return cli_main(["export", str(best), "-o", args.export])
    return 0
