"""`CLIError`: a command's own refusal of its arguments, printed by `bandlift` without a traceback
(library code raises its own `BandliftError`s, which the dispatcher prints the same way).

It lives in its own module so that subcommand modules anywhere (rt, train, export) can raise it
without importing the dispatcher, and the dispatcher imports none of them.
"""
from bandlift.rt.errors import BandliftError


class CLIError(BandliftError):
    """An error the user caused on the command line; printed without a traceback."""


def missing_extra(what: str, extra: str) -> CLIError:
    """The one-line error for a command that needs an optional dependency group."""
    return CLIError(f"{what} needs the [{extra}] extra: pip install 'bandlift[{extra}]'")


def in_range(value, flag: str, low, high):
    """`value` if low <= value <= high (NaN never is), else the one-line CLIError naming the flag."""
    if not low <= value <= high:
        raise CLIError(f"{flag} must be in {low:g}..{high:g}, got {value}")
    return value


def _finite(value):
    """NaN/inf -> None, recursively: bare NaN/Infinity are no JSON."""
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(path, data) -> None:
    """Every command's `--json FILE`: strict JSON (NaN/inf written as null), its folder made, written
    whole and then renamed into place; a failure is one CLIError."""
    import json
    import os

    from bandlift.rt.io.files import replacing

    try:
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        with replacing(path) as tmp:
            tmp.write_text(json.dumps(_finite(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    except OSError as exc:
        raise CLIError(f"cannot write {path}: {exc.strerror or exc}") from None


def printable(text) -> str:
    """`text` for a terminal: control characters (escape sequences that would retitle or recolour it)
    shown escaped, as Python writes them (\\x1b); newlines and tabs kept."""
    return "".join(c if c.isprintable() or c in "\n\t" else repr(c)[1:-1] for c in str(text))
