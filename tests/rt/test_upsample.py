"""Upsampler API and `bandlift upsample`: alignment, lengths, rates, NaN, files, folders, bad files."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from bandlift.rt import Upsampler
from bandlift.rt.cli import main
from jack_server import build_model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {"delay": build_model(d / "delay.onnx", "delay", delay=5),
            "conv": build_model(d / "conv.onnx", "conv", delay=3)}


def tones(rate, n, freqs=(0.05, 0.3), amps=(0.5, 0.3)):
    t = np.arange(n) / rate
    return np.stack([a * np.sin(2 * np.pi * f * rate * t + i) for i, (f, a) in enumerate(zip(freqs, amps))], 1)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("block", [64, 128, 512])
def test_delay_compensation_aligns_band_limited_input(models, rate, block):
    up = Upsampler(models["delay"], block=block)  # the model is a pure 5-sample delay
    n = rate // 3 + 17
    x = tones(rate, n).astype(np.float32)
    y, out_rate = up.process(x, rate, input_cutoff="nyquist")  # two tones: no band to measure
    m = round(n * 48000 / rate)
    assert out_rate == 48000 and y.shape == (m, 2)
    freqs = np.array([0.05, 0.3]) * rate
    t = np.arange(m)[:, None] / 48000
    ref = np.array([0.5, 0.3]) * np.sin(2 * np.pi * freqs * t + np.arange(2))
    assert np.abs(y - ref)[200:-200].max() < 5e-4  # aligned to the sample (filter ripple only)
    assert up.delay_at(rate) == up.session.delay + up.stream(rate, 2).engine.resampler.delay
    assert up.latency_at(rate) == up.delay_at(rate) + block
    assert up.latency == up.session.delay + block  # at out_rate: no resampler
    raw, _ = up.process(x, rate, input_cutoff="nyquist", delay_compensation=False)
    assert np.array_equal(raw[up.delay_at(rate):], y[: m - up.delay_at(rate)])


@pytest.mark.parametrize("out_rate", [44100, 32000, 96000])
@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_other_output_rates_are_aligned(models, rate, out_rate):
    """Upsampler(out_rate=...): the model runs at 48 kHz, its output is resampled; the delay removed
    is exact (whole output samples) so band-limited input comes out aligned."""
    up = Upsampler(models["delay"], out_rate=out_rate, block=128)
    n = rate // 3 + 17
    band = min(rate, out_rate, 48000)
    freqs = np.array([0.05, 0.3]) * band
    x = (np.array([0.5, 0.3]) * np.sin(2 * np.pi * freqs * np.arange(n)[:, None] / rate + np.arange(2)))
    y, got_rate = up.process(x.astype(np.float32), rate, input_cutoff="nyquist")  # two tones: no band to measure
    m = round(n * out_rate / rate)
    assert got_rate == out_rate and y.shape == (m, 2)
    ref = np.array([0.5, 0.3]) * np.sin(2 * np.pi * freqs * np.arange(m)[:, None] / out_rate + np.arange(2))
    edge = 400 if rate == 8000 else 200  # the filters' start-up transient
    assert np.abs(y - ref)[edge:-edge].max() < 5e-4
    assert up.latency_at(rate) == up.delay_at(rate) + -(-128 * out_rate // 48000)
    raw, _ = up.process(x.astype(np.float32), rate, input_cutoff="nyquist", delay_compensation=False)
    assert np.array_equal(raw[up.delay_at(rate):], y[: m - up.delay_at(rate)])


def test_44k_output_lag_zero_against_an_independent_resampler(models):
    """Band-limited noise at 16 kHz -> Upsampler(out_rate=44100) with a pure-delay model equals scipy's
    zero-phase polyphase resampling at lag 0 (cross-correlation of the low band)."""
    from scipy import signal

    rng = np.random.default_rng(3)
    x = signal.sosfiltfilt(signal.butter(10, 5000, fs=16000, output="sos"), rng.standard_normal(16000 * 2))
    x = (0.3 * x / np.abs(x).max()).astype(np.float32)
    y, rate = Upsampler(models["delay"], out_rate=44100).process(x, 16000)
    ref = signal.resample_poly(x.astype(np.float64), 441, 160)
    assert rate == 44100 and len(y) == len(ref) == round(len(x) * 44100 / 16000)
    mid = slice(2000, len(y) - 2000)
    lags = np.arange(-20, 21)
    corr = [np.dot(y[mid], np.roll(ref, lag)[mid]) for lag in lags]
    assert lags[int(np.argmax(corr))] == 0
    assert np.abs(y[mid] - ref[mid]).max() < 2e-3 * np.abs(ref).max()


def test_mono_int_and_input_validation(models):
    up = Upsampler(models["conv"])
    y, _ = up.process(np.zeros(1000, np.int16), 16000)
    assert y.shape == (3000,) and y.dtype == np.float32
    x = np.zeros((500, 2), np.float32)
    x[123, 1] = np.nan
    with pytest.raises(ValueError, match="sample 123 .channel 1"):
        up.process(x, 16000)
    with pytest.raises(ValueError, match="above the output rate"):
        up.process(np.zeros(100), 96000)
    with pytest.raises(ValueError, match="above the output rate 44100 Hz and the model rate 48000 Hz"):
        Upsampler(models["conv"], out_rate=44100).process(np.zeros(100), 88200)
    with pytest.raises(ValueError, match="out_rate must be a positive integer"):
        Upsampler(models["conv"], out_rate=44100.5)
    with pytest.raises(ValueError, match="positive integer"):
        up.process(np.zeros(100), 16000.5)
    with pytest.raises(ValueError, match=r"must be in \(0, 8000"):
        up.process(np.zeros(100), 16000, input_cutoff=12000)


def test_auto_cutoff_measures_the_band(models):
    from scipy import signal

    up = Upsampler(models["conv"])
    noise = np.random.default_rng(0).standard_normal(48000 * 2)
    band = signal.sosfiltfilt(signal.cheby2(12, 80, 6000, fs=48000, output="sos"), noise) * 0.1  # a brick wall
    measured = up.resolve_cutoff("auto", band[:, None], 48000)
    assert 5000 < measured < 7500
    assert up.resolve_cutoff(None, band[:, None], 48000) == 24000
    assert up.resolve_cutoff("nyquist", band[:, None], 48000) == 24000
    auto, _ = up.process(band, 48000)  # the default is "auto", as in `bandlift upsample`
    assert np.array_equal(auto, up.process(band, 48000, input_cutoff=measured)[0])
    assert not np.array_equal(auto, up.process(band, 48000, input_cutoff="nyquist")[0])
    assert np.array_equal(up.process(band, 48000, input_cutoff=None)[0],
                          up.process(band, 48000, input_cutoff="nyquist")[0])


def write(path, rate, channels, seconds=1.5):
    x = tones(rate, int(rate * seconds))[:, :channels]
    sf.write(str(path), x, rate)
    return x


# one LSB of each output sample format; 16-bit outputs carry +-1 LSB of TPDF dither on top of rounding
LSB = {"PCM_16": 2.0 ** -15, "PCM_24": 2.0 ** -23, "FLOAT": 0.0}


@pytest.mark.parametrize("name,rate,channels,out,subtype", [("a.wav", 16000, 1, "a.flac", "PCM_16"),
                                                             ("b.flac", 44100, 2, "b.wav", "PCM_16"),
                                                             ("c.ogg", 22050, 1, "c.wav", "PCM_24")])
def test_cli_file_equals_api_and_streams(models, tmp_path, capsys, name, rate, channels, out, subtype):
    src = tmp_path / name
    write(src, rate, channels, seconds=3.0)  # > 64k frames: several read blocks
    dst = tmp_path / "out" / out
    assert main(["upsample", str(src), str(dst), "--model", str(models["conv"]), "--input-cutoff", "nyquist"]) == 0
    printed = capsys.readouterr().out
    assert str(dst) in printed and "latency" in printed
    y, r = sf.read(str(dst), dtype="float32", always_2d=True)
    x, _ = sf.read(str(src), dtype="float32", always_2d=True)
    ref, _ = Upsampler(models["conv"], block=128).process(x, rate, input_cutoff="nyquist")
    assert r == 48000 and y.shape == (round(len(x) * 48000 / rate), channels)
    assert sf.info(str(dst)).subtype == subtype  # the input's sample format, or 24-bit for a lossy input
    assert np.abs(y - ref).max() <= 2 * LSB[subtype] + 1e-7  # libsndfile writes x * 32767, reads / 32768


def test_cli_rate_44100_writes_a_44k_file(models, tmp_path, capsys):
    src, dst = tmp_path / "a.wav", tmp_path / "a44.wav"
    x = write(src, 16000, 1, seconds=5.0)  # > 64k frames: several read blocks
    assert main(["upsample", str(src), str(dst), "--rate", "44100", "--model", str(models["conv"]),
                 "--input-cutoff", "nyquist", "--subtype", "FLOAT"]) == 0
    assert "16000 -> 44100 Hz" in capsys.readouterr().out
    info = sf.info(str(dst))
    assert info.samplerate == 44100 and info.frames == round(len(x) * 44100 / 16000)
    y, _ = sf.read(str(dst), dtype="float32", always_2d=True)
    ref, _ = Upsampler(models["conv"], out_rate=44100).process(sf.read(str(src), dtype="float32", always_2d=True)[0],
                                                               16000, input_cutoff="nyquist")
    assert np.abs(y - ref).max() <= 1e-7
    hi = tmp_path / "hi.wav"
    write(hi, 96000, 1, seconds=0.1)
    assert main(["upsample", str(hi), str(tmp_path / "x.wav"), "--rate", "44100", "--model", str(models["conv"])]) == 2
    assert "96000 Hz is above the output rate 44100 Hz" in capsys.readouterr().err


def test_cli_folder_mode_skips_corrupt_file(models, tmp_path, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    write(src / "one.wav", 16000, 1)
    write(src / "sub" / "two.flac", 24000, 2)
    write(src / "sub" / "three.mp3", 22050, 1)
    (src / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    nan = np.zeros(8000, np.float32)
    nan[4000] = np.nan
    sf.write(str(src / "nan.wav"), nan, 16000, subtype="FLOAT")
    out = tmp_path / "out"
    rc = main(["upsample", str(src), "-o", str(out), "--format", "flac", "--model", str(models["conv"]),
               "--jobs", "2"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "broken.wav" in err and "sample 4000" in err and "3 of 5 files" in err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["one.flac", "sub", "sub/three.flac",
                                                                         "sub/two.flac"]
    assert sf.info(str(out / "sub" / "two.flac")).channels == 2


def test_cli_refuses_to_overwrite_input_and_bad_args(models, tmp_path, capsys):
    src = tmp_path / "a.wav"
    write(src, 16000, 1)
    before = src.read_bytes()
    assert main(["upsample", str(src), str(src), "--model", str(models["conv"])]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err and src.read_bytes() == before
    assert main(["upsample", str(src), str(tmp_path / "x.m4a"), "--model", str(models["conv"])]) == 2
    assert "unsupported extension" in capsys.readouterr().err
    assert main(["upsample", str(tmp_path / "nope.wav"), str(tmp_path / "x.wav")]) == 2
    assert main(["upsample", str(src), str(tmp_path / "x.wav"), "--model", str(tmp_path / "none.onnx")]) == 2
    assert "model not found" in capsys.readouterr().err


def test_long_file_memory_stays_flat(models, tmp_path):
    import tracemalloc

    from bandlift.rt.cli.upsample import upsample_file

    src = tmp_path / "long.wav"
    sf.write(str(src), np.zeros((16000 * 60, 1), np.float32) + 0.01, 16000, subtype="FLOAT")
    up = Upsampler(models["conv"], block=512)
    tracemalloc.start()
    info = upsample_file(up, src, tmp_path / "long_out.wav", input_cutoff="nyquist")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert info["output_frames"] == 48000 * 60
    assert peak < 6e6, f"peak {peak / 1e6:.1f} MB for an 11.5 MB output"  # a few read blocks, not the file


def test_rt_never_imports_torch():
    import subprocess
    import sys

    code = ("import sys; import bandlift.rt, bandlift.rt.cli; from bandlift.rt.cli import upsample, live, bench; "
            "from bandlift.rt.io import callbacks, devices, runner, files; from bandlift.rt.model import session, contract; "
            "from bandlift.rt.dsp import resample, ringbuffer, bandwidth; from bandlift.rt import engine, api; "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'torch']; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_says_when_the_output_rate_throws_the_generated_band_away(models, tmp_path, capsys):
    """Issue 22: `upsample 44k.wav o.wav --rate 16000` ran the model and dropped its band without a word."""
    src = tmp_path / "a44.wav"
    write(src, 44100, 1, seconds=0.5)
    assert main(["upsample", str(src), str(tmp_path / "o16.wav"), "--rate", "16000", "--model",
                 str(models["conv"]), "--input-cutoff", "nyquist"]) == 0
    out = capsys.readouterr().out
    assert out.count("the band the model generates is thrown away") == 1, out
    low = tmp_path / "a8.wav"  # 8 kHz to 16 kHz: the model's 4-8 kHz band is kept, no note
    write(low, 8000, 1, seconds=0.5)
    assert main(["upsample", str(low), str(tmp_path / "o8.wav"), "--rate", "16000", "--model",
                 str(models["conv"]), "--input-cutoff", "nyquist"]) == 0
    assert "thrown away" not in capsys.readouterr().out


def test_no_progress_bar_when_stderr_is_not_a_terminal(models, tmp_path):
    """Issue 22: tqdm's carriage returns filled logs; a piped run (file and folder mode) draws no bar."""
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "in").mkdir()
    for name in ("a.wav", "b.wav"):
        write(tmp_path / "in" / name, 16000, 1, seconds=0.5)
    bandlift = str(Path(sys.executable).with_name("bandlift"))
    for argv in (["in/a.wav", "a.wav"], ["in", "-o", "out"]):
        result = subprocess.run([bandlift, "upsample", *argv, "--model", str(models["conv"])], cwd=tmp_path,
                                capture_output=True, timeout=300)  # bytes: text mode would turn \r into \n
        assert result.returncode == 0, result.stderr
        assert b"\r" not in result.stderr and b"%|" not in result.stderr, result.stderr
