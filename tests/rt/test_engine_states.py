"""The engine's states: the transition table, the hold's timing, the engine's walk through them, and
the engine's output against the flag logic it replaced (bit for bit on engine_scenarios.SCENARIOS)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import engine_scenarios
from bandlift.rt.engine import StreamEngine
from bandlift.rt.model.session import ModelSession
from bandlift.rt.states import Event, HoldTimer, State, transition
from engine_before_states import FlagEngine
from jack_server import build_model

P, B, H, W = State.PLAY, State.BYPASS, State.HOLD, State.WARM
E = Event
TABLE = [  # (state, event) -> state, every pair
    (P, E.BYPASS_ON, B), (P, E.BYPASS_OFF, P), (P, E.FAULT, H), (P, E.LATE, H), (P, E.FORCED, H),
    (P, E.WARM_UP, P), (P, E.HOLD_OVER, P),
    (B, E.BYPASS_ON, B), (B, E.BYPASS_OFF, P), (B, E.FAULT, H), (B, E.LATE, H), (B, E.FORCED, H),
    (B, E.WARM_UP, B), (B, E.HOLD_OVER, B),
    (H, E.BYPASS_ON, H), (H, E.BYPASS_OFF, H), (H, E.FAULT, H), (H, E.LATE, H), (H, E.FORCED, H),
    (H, E.WARM_UP, W), (H, E.HOLD_OVER, P),
    (W, E.BYPASS_ON, W), (W, E.BYPASS_OFF, W), (W, E.FAULT, H), (W, E.LATE, H), (W, E.FORCED, W),
    (W, E.WARM_UP, W), (W, E.HOLD_OVER, P),
]


def test_table_covers_every_pair():
    assert {(s, e) for s, e, _ in TABLE} == {(s, e) for s in State for e in Event}


@pytest.mark.parametrize("state,event,after", TABLE, ids=[f"{s.value}+{e.value}" for s, e, _ in TABLE])
def test_transition(state, event, after):
    assert transition(state, event) is after


def test_hold_timer_events_back_off_and_late_warm_up():
    """0.5 s of 0.1 s blocks, the last 2 warming; the next hold doubles; clean play as long as the
    next hold halves it; the first warm-up call and one more may run late, a third restarts the hold."""
    timer = HoldTimer(1000, 100, 2)
    assert timer.late_allowed == 1
    timer.start()
    assert [timer.tick() for _ in range(6)] == [None, None, E.WARM_UP, E.WARM_UP, E.HOLD_OVER, None]
    timer.start()
    assert timer.left == 10 and timer.seconds == 2.0
    for _ in range(19):
        timer.played_clean()
    assert timer.seconds == 2.0
    timer.played_clean()  # 2 s of clean play: the next hold is 1 s again
    assert timer.seconds == 1.0
    timer.start()
    while timer.left > timer.warm_blocks:
        timer.tick()
    assert timer.tolerates_late_warm_up()  # the first warm-up call
    timer.tick()
    assert timer.tolerates_late_warm_up() and not timer.tolerates_late_warm_up()


def test_engine_walks_the_states(tmp_path):
    """A forced bypass: HOLD, its last warm_blocks blocks WARM, then PLAY; the user's bypass: BYPASS."""
    eng = StreamEngine(ModelSession(build_model(tmp_path / "d.onnx", "delay", delay=96, frame=32)), block=128)
    x = np.zeros((1, 128), np.float32)
    eng.process(x)
    assert eng.state is State.PLAY and eng.active == 1.0
    eng.force_bypass("overload")
    states = []
    while True:
        eng.process(x)
        states.append(eng.state)
        if eng.state is State.PLAY:
            break
    hold = int(np.ceil(0.5 * 48000 / 128))
    assert states == [H] * (hold - 1 - eng.warm_blocks) + [W] * eng.warm_blocks + [P]
    eng.bypass = True
    eng.process(x)
    assert eng.state is State.BYPASS and eng.active == 0.0 and not eng.holding


@pytest.fixture(scope="module")
def scenario_models(tmp_path_factory):
    return engine_scenarios.build_models(tmp_path_factory.mktemp("scenarios"))


@pytest.mark.parametrize("name", list(engine_scenarios.SCENARIOS))
def test_output_is_bit_exact_with_the_flag_logic(scenario_models, name):
    y, rows, stats = engine_scenarios.run(name, StreamEngine, scenario_models)
    y0, rows0, stats0 = engine_scenarios.run(name, FlagEngine, scenario_models)
    assert np.array_equal(y, y0) and np.array_equal(rows, rows0)
    assert json.dumps(stats, default=str) == json.dumps(stats0, default=str)
    if name.startswith(("random-nan", "random-explode", "late-")):
        assert stats["bypass_events"] >= 1  # the scenario does switch
