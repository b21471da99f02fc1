"""`bandlift export CHECKPOINT -o MODEL.onnx [--check]`."""
from __future__ import annotations

import json
from pathlib import Path

from bandlift.rt.cli.errors import CLIError, in_range, missing_extra


def configure(parser):
    parser.add_argument("checkpoint", help="training checkpoint (.pt) written by `bandlift train`")
    parser.add_argument("-o", "--output", required=True, help="ONNX file to write")
    parser.add_argument("--check", action="store_true",
                        help="compare ONNX Runtime block by block with torch on the whole signal")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="with --check: the largest |ONNX block by block - torch whole| sample difference "
                             "accepted (default 1e-4)")


def run(args) -> int:
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        raise missing_extra("export", "train") from None
    in_range(args.tolerance, "--tolerance", 0, 1)
    from bandlift.export.onnx_export import check_parity, export_generator
    from bandlift.train.trainer import CheckpointError, load_generator

    if not Path(args.checkpoint).is_file():
        raise CLIError(f"checkpoint not found: {args.checkpoint}")
    if Path(args.output).exists() and Path(args.output).resolve() == Path(args.checkpoint).resolve():
        raise CLIError(f"refusing to overwrite the checkpoint {args.checkpoint} with the model")
    if Path(args.output).is_dir():
        raise CLIError(f"-o {args.output} is a folder: name the .onnx file")
    try:
        gen = load_generator(args.checkpoint)
    except CheckpointError as exc:
        raise CLIError(str(exc)) from None
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
