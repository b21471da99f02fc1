"""The `bandlift` command line: one entry point that dispatches to one module per subcommand.

Each subcommand module defines ``configure(parser)`` and ``run(args) -> int``. Only the module of the
command being run is imported (``bandlift --help`` imports none), so a command's dependencies (torch for
``train``/``export``, librosa for ``eval``) are loaded only when that command runs; the table below
names modules by string, so the engine has no import edge to ``bandlift.train`` or ``bandlift.export``.
Errors the user can act on (``BandliftError``: a bad file, model, device, manifest or argument) are
printed here, and only here, as one line without a traceback (exit code 2).
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from bandlift.rt.cli.errors import CLIError, printable
from bandlift.rt.errors import BandliftError

__all__ = ["CLIError", "SUBCOMMANDS", "build_parser", "main"]

SUBCOMMANDS = {
    "demo": ("bandlift.train.cli.demo", "Upsample the bundled clip with the shipped model and measure it."),
    "upsample": ("bandlift.rt.cli.upsample", "Upsample audio files (or a folder) to a higher sample rate."),
    "live": ("bandlift.rt.cli.live", "Upsample a live input device into an output device."),
    "bench": ("bandlift.rt.cli.bench", "Measure latency, per-block time and real-time factor."),
    "eval": ("bandlift.train.cli.eval", "Evaluate against sinc/spline/noise-fill/Griffin-Lim baselines."),
    "export": ("bandlift.export.cli.export", "Export a training checkpoint to a streaming ONNX model."),
    "train": ("bandlift.train.cli.train", "Train the generator (needs the [train] extra)."),
    "dataset": ("bandlift.train.cli.dataset", "Collect and index training audio."),
    "curve": ("bandlift.train.cli.curve", "A training run's validation curve (ViSQOL, LSD by step) as CSV and PNG."),
}


def _command_of(argv: list[str]) -> str | None:
    """The subcommand named in argv (its first positional argument), if any."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported and configured (all others are names + help)."""
    from bandlift.rt import __version__

    parser = argparse.ArgumentParser(prog="bandlift", description="Real-time audio super-resolution.")
    parser.add_argument("--version", action="version", version=f"bandlift {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            module.configure(p)
            p.set_defaults(_run=module.run)
    return parser


def _hang_up(signum, frame):
    raise KeyboardInterrupt  # printed as "interrupted"; every command's cleanup runs on the way out


def _innermost(parser: argparse.ArgumentParser, args) -> argparse.ArgumentParser:
    """The subcommand parser (at any depth, e.g. `dataset info`) that parsed `args`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and getattr(args, action.dest, None) in action.choices:
            return _innermost(action.choices[getattr(args, action.dest)], args)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_of(argv))
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the (sub)command that got them, with its own usage, not the top level's
        _innermost(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGHUP) == signal.SIG_DFL:
        signal.signal(signal.SIGHUP, _hang_up)  # a closed terminal: unwind (temporaries removed), not die
    try:
        return int(args._run(args) or 0)
    except BandliftError as exc:
        print(f"bandlift {args.command}: error: {printable(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
