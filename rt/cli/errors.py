"""`CLIError`: an error the user caused, printed by `bandlift` without a traceback.

It lives in its own module (no imports) so that subcommand modules anywhere (rt, train, export) can
raise it without importing the dispatcher, and the dispatcher imports none of them.
"""


class CLIError(Exception):
    """An error the user caused; printed without a traceback."""


def missing_extra(what: str, extra: str) -> CLIError:
    """The one-line error for a command that needs an optional dependency group."""
    return CLIError(f"{what} needs the [{extra}] extra: pip install 'bandlift[{extra}]'")


def in_range(value, flag: str, low, high):
    """`value` if low <= value <= high (NaN never is), else the one-line CLIError naming the flag."""
    if not low <= value <= high:
        raise CLIError(f"{flag} must be in {low:g}..{high:g}, got {value}")
    return value
