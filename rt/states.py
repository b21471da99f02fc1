"""The engine's states, the events that move it, and the hold that follows a fault or an overload.

Each model block plays in one state (`StreamEngine.state`, read after the block)::

    PLAY    the model's output plays
    BYPASS  the user's bypass: the input plays; the model keeps running on it, so it returns warm
    HOLD    after a fault or an overload: the input plays and the model rests (its state is kept after
            an overload, which is only late, and reset after a fault, which may have left a NaN in it)
    WARM    the last blocks of a hold: the model runs on the input again, its output discarded, so it
            returns with its state holding the recent signal

The block that leaves PLAY crossfades to the input (raised cosine over the block) on BYPASS_ON and on
LATE (the late block's output is still good to fade out with); it switches at once, the step ramped
away by a de-click, on FAULT (the output is unusable) and FORCED (the next block must be the input).
The block that enters PLAY (from BYPASS or WARM) crossfades to the model.

`transition` is the whole state machine; `HoldTimer` says when a hold's events come.
"""
from __future__ import annotations

import math
from enum import Enum

HOLD_S = 0.5
MAX_HOLD_S = 8.0
WARM_S = 0.1  # the warm-up of a model whose metadata lacks its reach (the shipped model reaches 87 ms)
WARM_LATE_FRACTION = 0.1  # late warm-up blocks tolerated (besides the first, cold call): 10 %, at least 1


class State(Enum):
    PLAY = "play"
    BYPASS = "bypass"
    HOLD = "hold"
    WARM = "warm"


class Event(Enum):
    BYPASS_ON = "bypass on"  # the user's bypass switch, read before each block
    BYPASS_OFF = "bypass off"
    FAULT = "fault"  # non-finite or exploded model output: discarded, the model reset
    LATE = "late"  # a block past its deadline (overload); not a tolerated late warm-up block
    FORCED = "forced"  # `force_bypass` (the output already ran late)
    WARM_UP = "warm-up"  # the hold has reached its last `warm_blocks` blocks
    HOLD_OVER = "hold over"


TRANSITIONS = {
    (State.PLAY, Event.BYPASS_ON): State.BYPASS,
    (State.BYPASS, Event.BYPASS_OFF): State.PLAY,
    **{(state, event): State.HOLD for state in (State.PLAY, State.BYPASS)
       for event in (Event.FAULT, Event.LATE, Event.FORCED)},
    (State.HOLD, Event.WARM_UP): State.WARM,
    (State.WARM, Event.FAULT): State.HOLD,  # a warm-up that fails restarts the hold
    (State.WARM, Event.LATE): State.HOLD,
    (State.WARM, Event.HOLD_OVER): State.PLAY,  # then BYPASS_ON if the user's bypass is on
    (State.HOLD, Event.HOLD_OVER): State.PLAY,
}


def transition(state: State, event: Event) -> State:
    """The state after `event`; any pair not in TRANSITIONS leaves the state as it is (a hold ignores
    the bypass switch and a forced bypass; the switch is read again when the hold is over)."""
    return TRANSITIONS.get((state, event), state)


class HoldTimer:
    """A hold's length and its events. A hold lasts HOLD_S, doubling for each repeated fault or
    overload up to MAX_HOLD_S, and halving again after each stretch of clean play as long as the next
    hold; its last `warm_blocks` blocks warm the model up. A late warm-up block costs nothing audible
    (its output is discarded): the first call may be slow from cold caches, and a few more misses (10 %
    of the warm-up, at least one; after an idle hold the next calls run cold too) are allowed before
    the hold restarts."""

    def __init__(self, rate: int, block: int, warm_blocks: int):
        self.rate, self.block, self.warm_blocks = rate, block, warm_blocks
        self.block_seconds = block / rate
        self.late_allowed = max(1, int(WARM_LATE_FRACTION * warm_blocks))
        self.left = 0  # blocks left in the hold
        self.seconds = HOLD_S  # the next hold's length
        self.clean = 0  # blocks played cleanly since the last hold
        self.late = 0  # late warm-up blocks in this hold (the first call excepted)

    def start(self) -> None:
        self.left = max(self.warm_blocks + 1, math.ceil(self.seconds * self.rate / self.block))
        self.seconds = min(self.seconds * 2, MAX_HOLD_S)
        self.clean = 0
        self.late = 0

    def tick(self) -> Event | None:
        """A block begins: the hold's event at this block, if any."""
        if not self.left:
            return None
        self.left -= 1
        if not self.left:
            return Event.HOLD_OVER
        return Event.WARM_UP if self.left <= self.warm_blocks else None

    def played_clean(self) -> None:
        self.clean += 1
        if self.seconds > HOLD_S and self.clean * self.block_seconds >= self.seconds:
            self.seconds /= 2  # clean play as long as the next hold: the back-off steps down
            self.clean = 0

    def tolerates_late_warm_up(self) -> bool:
        if self.left == self.warm_blocks:  # the first warm-up call
            return True
        self.late += 1
        return self.late <= self.late_allowed
