"""The `bandlift` command line: one entry point, one module per subcommand.

Each subcommand module defines ``configure(parser)`` and ``run(args) -> int``. Modules are imported
when the parser is built, so they must not import torch at module level (``train``/``export`` import
it inside ``run``): ``bandlift upsample`` must work without torch installed.
"""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "demo": ("bandlift.rt.cmd_demo", "Upsample the bundled clip with the shipped model and measure it."),
    "upsample": ("bandlift.rt.cmd_upsample", "Upsample audio files (or a folder) to a higher sample rate."),
    "live": ("bandlift.rt.cmd_live", "Upsample a live input device into an output device."),
    "bench": ("bandlift.rt.cmd_bench", "Measure latency, per-block time and real-time factor."),
    "eval": ("bandlift.rt.cmd_eval", "Evaluate against sinc/spline/noise-fill/Griffin-Lim baselines."),
    "export": ("bandlift.export.cmd_export", "Export a training checkpoint to a streaming ONNX model."),
    "train": ("bandlift.train.cmd_train", "Train the generator (needs the [train] extra)."),
    "dataset": ("bandlift.train.cmd_dataset", "Collect and index training audio."),
}


class CLIError(Exception):
    """An error the user caused; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    from bandlift.rt import __version__

    parser = argparse.ArgumentParser(prog="bandlift", description="Real-time audio super-resolution.")
    parser.add_argument("--version", action="version", version=f"bandlift {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if not exc.name or not exc.name.startswith("bandlift"):
                raise
            continue  # a subcommand not built yet
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except CLIError as exc:
        print(f"bandlift {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # run the imported module's main, so CLIError is the same class
    from bandlift.rt.cli import main as package_main

    sys.exit(package_main())
