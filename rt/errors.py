"""`BandliftError`: the base of the errors a user can act on (a file, a model, a device, a manifest,
a setting). Library code raises its own subclasses; the `bandlift` dispatcher (rt/cli) prints any of
them as one line, without a traceback, and exits with 2. No imports: every layer can use it.
"""


class BandliftError(Exception):
    """Something the user can fix; its message, alone, says what and where."""
