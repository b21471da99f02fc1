"""Progress bars: one helper for every bar, so that none writes carriage returns into a log."""
from __future__ import annotations

import sys


def progress_bar(iterable=None, *, disable: bool = False, **kwargs):
    """A tqdm bar on stderr, drawn only when stderr is a terminal (a piped or logged run gets no bar)."""
    from tqdm import tqdm

    return tqdm(iterable, file=sys.stderr, disable=True if disable else None, **kwargs)
