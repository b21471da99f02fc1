"""The shipped model: what the README says of it (size, delay, latency, quality against the
baselines on held-out real audio) holds for the file in the package; the demo works."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from bandlift.rt import Upsampler
from bandlift.rt.cli import main
from bandlift.rt.model.session import ModelSession, default_model_path
from bandlift.train.eval.baselines import noise_fill
from bandlift.train.cli.demo import example_path
from bandlift.train.eval.metrics import lsd

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reference():
    """The bundled clip: CC0 Sonic Pi samples from the test split, never trained on."""
    x, sr = sf.read(example_path(), dtype="float32")
    return soxr.resample(x, sr, 48000).astype(np.float32)


@pytest.mark.parametrize("input_rate", [8000, 16000, 24000])
def test_shipped_model_beats_sinc_and_noise_fill_on_held_out_audio(reference, input_rate):
    """The README's quality table (16 kHz input): bandlift's LSD below sinc's and the shaped
    noise-fill's; at the other input rates (docs/quality.md) below sinc's."""
    low = soxr.resample(reference, 48000, input_rate)
    y, rate = Upsampler().process(low, input_rate)
    sinc = soxr.resample(low, input_rate, 48000)
    filled = noise_fill(low, input_rate, 48000)
    n = min(len(y), len(sinc), len(filled), len(reference))
    assert rate == 48000 and abs(len(y) - len(reference)) <= 2
    scores = {name: lsd(reference[:n], out[:n], 48000) for name, out in
              (("model", y), ("sinc", sinc), ("noise_fill", filled))}
    print(f"{input_rate} Hz -> 48 kHz: LSD {scores}")
    assert scores["model"] < scores["sinc"]
    if input_rate == 16000:
        assert scores["model"] < scores["noise_fill"]


@pytest.mark.parametrize("doc", ["README.md", "docs/quality.md"])
def test_shipped_model_is_what_the_docs_say(doc):
    """Parameters, file size and MFLOP/s as the docs print them; the model delay (n_fft - hop) and the
    latency at 48 kHz (model delay + one 128-sample block) as the README gives them."""
    text = (ROOT / doc).read_text()
    claim = re.search(r"`rt/model/default\.onnx`\W+([\d,]+) parameters, ([\d.]+) MB, (\d+) MFLOP", text)
    assert claim, f"{doc} no longer describes the shipped model"
    meta = ModelSession(default_model_path(), provider="cpu").session.get_modelmeta().custom_metadata_map
    assert int(claim[1].replace(",", "")) == int(meta["bandlift.params"])
    assert float(claim[2]) == round(default_model_path().stat().st_size / 1e6, 2)
    assert int(claim[3]) == round(float(meta["bandlift.mflops_per_second"]))
    if doc == "README.md":
        delay = int(re.search(r"n_fft − hop = (\d+) samples", text)[1])
        config = json.loads(meta["bandlift.config"])
        assert delay == int(meta["bandlift.delay"]) == config["n_fft"] - config["frame"]
        assert Upsampler().latency == delay + 128


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
