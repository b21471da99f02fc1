"""`bandlift export CHECKPOINT -o MODEL.onnx [--no-check]`; `bandlift export --from-onnx OLD.onnx -o MODEL.onnx`
re-exports a model (e.g. one of an older contract) from the weights it carries."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bandlift.rt.cli.errors import CLIError, in_range, missing_extra


def configure(parser):
    parser.add_argument("checkpoint", nargs="?", help="training checkpoint (.pt) written by `bandlift train`")
    parser.add_argument("--from-onnx", metavar="MODEL", help="instead of a checkpoint: a bandlift ONNX model (any "
                        "contract) whose weights and config are re-exported")
    parser.add_argument("-o", "--output", required=True, help="ONNX file to write")
    parser.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                        help="compare ONNX Runtime block by block with torch on the whole signal (the default; "
                             "--no-check skips it)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="the parity check's largest |ONNX block by block - torch whole| sample difference "
                             "accepted (default 1e-4)")


def run(args) -> int:
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        raise missing_extra("export", "train") from None
    in_range(args.tolerance, "--tolerance", 0, 1)
    from bandlift.export.onnx_export import check_parity, export_generator, generator_from_onnx
    from bandlift.train.checkpoints import load_generator

    if (args.checkpoint is None) == (args.from_onnx is None):
        raise CLIError("name a checkpoint or --from-onnx MODEL (one of them)")
    source = args.checkpoint or args.from_onnx
    what = "checkpoint" if args.checkpoint else "model"
    if not Path(source).is_file():
        raise CLIError(f"{what} not found: {source}")
    if Path(args.output).exists() and Path(args.output).resolve() == Path(source).resolve():
        raise CLIError(f"refusing to overwrite the {what} {source} with the new model")
    if Path(args.output).is_dir():
        raise CLIError(f"-o {args.output} is a folder: name the .onnx file")
    gen = load_generator(source) if args.checkpoint else generator_from_onnx(source)
    try:
        path = export_generator(gen, args.output)
    except OSError as exc:
        raise CLIError(f"cannot write {args.output}: {exc.strerror or type(exc).__name__}") from None
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    if args.check:
        errors = check_parity(gen, path)
        print("max |onnx block-by-block - torch whole|: " + json.dumps(errors))
        if max(errors.values()) > args.tolerance:
            raise CLIError(f"parity check failed: {errors} > {args.tolerance}")
    return 0
