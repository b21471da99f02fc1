"""The shipped model: loads from the package, beats sinc on held-out real audio, demo works."""
import json

import numpy as np
import pytest
import soundfile as sf
import soxr

from bandlift.rt import Upsampler
from bandlift.rt.cli import main
from bandlift.train.eval.cmd_demo import example_path
from bandlift.train.eval.metrics import lsd


@pytest.fixture(scope="module")
def reference():
    """The bundled clip: CC0 Sonic Pi samples from the test split, never trained on."""
    x, sr = sf.read(example_path(), dtype="float32")
    return soxr.resample(x, sr, 48000).astype(np.float32)


@pytest.mark.parametrize("input_rate", [8000, 16000, 24000])
def test_shipped_model_beats_sinc_on_held_out_audio(reference, input_rate):
    low = soxr.resample(reference, 48000, input_rate)
    y, rate = Upsampler().process(low, input_rate)
    sinc = soxr.resample(low, input_rate, 48000)
    n = min(len(y), len(sinc), len(reference))
    assert rate == 48000 and abs(len(y) - len(reference)) <= 2
    model_lsd, sinc_lsd = lsd(reference[:n], y[:n], 48000), lsd(reference[:n], sinc[:n], 48000)
    print(f"{input_rate} Hz -> 48 kHz: LSD model {model_lsd:.3f}, sinc {sinc_lsd:.3f}")
    assert model_lsd < 0.9 * sinc_lsd


def test_shipped_model_is_small_and_described():
    up = Upsampler()
    assert 0 < up.latency <= 480  # <= 10 ms at 48 kHz
    from importlib import resources

    size = resources.files("bandlift.rt.model").joinpath("default.onnx").stat().st_size
    assert size < 5_000_000


def test_demo_command(tmp_path):
    out = tmp_path / "demo.json"
    assert main(["demo", "-o", str(tmp_path), "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["lsd"]["bandlift"] < figures["lsd"]["sinc"]
    y, sr = sf.read(figures["output"])
    assert sr == 48000 and np.isfinite(y).all()


def test_demo_says_when_it_replaces_earlier_files(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path)]) == 0
    assert "replaced" not in capsys.readouterr().out
    assert main(["demo", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "replaced the earlier demo's files" in out and str(tmp_path / "example_48k_bandlift.wav") in out, out
