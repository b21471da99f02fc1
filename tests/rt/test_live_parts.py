"""Live parts that need no audio server: the status line, the provider for live audio."""
from __future__ import annotations

import pytest

from bandlift.rt.engine import StreamEngine


@pytest.fixture
def runner():
    try:
        from bandlift.rt.io.runner import LiveRunner
    except OSError as exc:  # sounddevice without the PortAudio library
        pytest.skip(str(exc))
    r = LiveRunner(StreamEngine(None, 48000, 48000, 1, 128))
    yield r
    r.close()


def test_status_line_p99_is_over_the_last_blocks(runner):
    """Issue 23: after 70,000 blocks the "last 2000" were blocks 63,536-65,535 of the engine's ring of
    65,536 times, not the latest: the p99 went stale for good."""
    stats = runner.engine.stats
    for i in range(70_000):
        stats.add_time(0.005 if i >= 68_000 else 0.001)  # the last 2,000 blocks slow
    assert "block p99 5.00 ms" in runner.status_line()
    for _ in range(1_970):
        stats.add_time(0.001)
    assert "block p99 5.00 ms" in runner.status_line()  # 30 slow blocks left in the window: 1.5 %
    for _ in range(30):
        stats.add_time(0.001)
    assert "block p99 1.00 ms" in runner.status_line()


def test_status_line_p99_early_in_a_run(runner):
    stats = runner.engine.stats
    assert "block p99 nan ms" in runner.status_line()
    for t in (0.001, 0.002, 0.003):
        stats.add_time(t)
    assert "block p99 2.98 ms" in runner.status_line()


def test_auto_provider_is_the_cpu_for_live_audio():
    """Issue 23: `live --provider auto` took CUDA, a device round trip per 2.7 ms block for a model the
    CPU runs in 0.12 ms; "auto" is the CPU there, an explicit choice is kept."""
    from bandlift.rt.model.session import live_provider

    assert [live_provider(p) for p in ("auto", "cpu", "cuda")] == ["cpu", "cpu", "cuda"]
