"""User chains through real encoders (train/conditions.py): rate, band, alignment; training draws them."""
import numpy as np
import pytest

pytest.importorskip("av")
soxr = pytest.importorskip("soxr")

from bandlift.rt.dsp.bandwidth import effective_bandwidth  # noqa: E402
from bandlift.train import conditions  # noqa: E402
from bandlift.train.degrade import recording_chain  # noqa: E402


def voice_like(rate, seconds=1.5, seed=0):
    """A pitched, amplitude-modulated harmonic tone plus a little broadband noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    f0 = 140 * (1 + 0.05 * np.sin(2 * np.pi * 2 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    harmonics = sum(np.sin(k * phase) / k for k in range(1, 60) if k * 160 < rate / 2)
    return 0.2 * harmonics * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(len(t))


def correlation_at(x, y, lag):
    a, b = x[2000:-2000], np.roll(y, -lag)[2000:-2000]
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("name", list(conditions.CONDITIONS))
@pytest.mark.parametrize("rate", [48000, 44100])
def test_each_chain_delivers_its_rate_and_band_aligned_with_the_reference(name, rate):
    x = voice_like(rate)
    y, cutoff = conditions.apply(name, x, rate)
    chain_rate = conditions.chain_rate(name, rate)
    assert y.dtype == np.float32 and len(y) == round(len(x) * chain_rate / rate)
    assert cutoff == conditions.CONDITIONS[name].cutoff_hz < chain_rate / 2 + 1
    # nothing above the band the chain leaves (a codec's own wall may sit a little above the nominal one)
    assert effective_bandwidth(y, chain_rate) <= max(1.12 * cutoff, chain_rate / 2 if chain_rate <= 16000 else 0)
    plain = x if chain_rate == rate else soxr.resample(x, rate, chain_rate, quality="VHQ")
    low_edge = (conditions.CONDITIONS[name].band_pass or (1.0,))[0]
    plain = conditions.band_pass(plain, chain_rate, low_edge, cutoff) if cutoff < chain_rate / 2 else plain
    at_zero = correlation_at(plain, y, 0)
    # the codec's delay is removed: aligned to the sample (parametric codecs match the waveform less)
    assert at_zero > (0.6 if name in ("amr-nb", "silk12", "silk24") else 0.9), at_zero
    assert at_zero > max(correlation_at(plain, y, -2), correlation_at(plain, y, 2))


def test_telephone_cuts_below_300_hz_and_stereo_keeps_its_channels():
    rate = 48000
    t = np.arange(rate) / rate
    low, mid = 0.3 * np.sin(2 * np.pi * 100 * t), 0.3 * np.sin(2 * np.pi * 1000 * t)
    y, cutoff = conditions.apply("telephone", np.stack([low, mid], axis=1), rate)
    assert y.shape == (8000, 2) and cutoff == 3400.0
    rms = np.sqrt(np.mean(y[1000:-1000] ** 2, axis=0))
    assert 20 * np.log10(rms[0] / rms[1]) < -10  # 100 Hz is outside the line's band, 1 kHz inside
    assert rms[1] == pytest.approx(0.3 / np.sqrt(2), rel=0.05)  # mu-law keeps the level


def test_unknown_condition_is_a_clear_error():
    with pytest.raises(conditions.ConditionError, match="unknown condition 'fax'.*telephone"):
        conditions.apply("fax", np.zeros(100), 48000)


def test_training_draws_user_chains_under_the_targets_ceiling():
    x = voice_like(48000, seconds=1.0)
    cutoffs = set()
    for seed in range(24):
        y, cutoff = conditions.draw(x, 48000, np.random.default_rng(seed), max_cutoff_hz=9000)
        assert y.shape == x.shape and y.dtype == np.float32
        assert cutoff <= 9000 and cutoff in {c.cutoff_hz for c in conditions.CONDITIONS.values()}
        assert effective_bandwidth(y, 48000) <= 1.12 * cutoff + 200
        cutoffs.add(cutoff)
    assert cutoffs == {3400.0, 7000.0, 8000.0}  # telephone/AMR, G.722, SILK: all that fit under 9 kHz
    assert conditions.draw(x, 48000, np.random.default_rng(0), max_cutoff_hz=3000) is None  # none fits


def test_a_recording_chain_colours_the_spectrum_and_keeps_the_level():
    x = np.random.default_rng(1).standard_normal(48000)
    rng = np.random.default_rng(3)
    y = recording_chain(x, 48000, rng)
    assert np.sqrt(np.mean(y ** 2)) == pytest.approx(np.sqrt(np.mean(x ** 2)), rel=1e-6)
    spectrum = np.abs(np.fft.rfft(y)) / np.abs(np.fft.rfft(x))
    bands = [spectrum[lo:hi].mean() for lo, hi in ((200, 1000), (4000, 8000), (15000, 20000))]
    assert max(bands) / min(bands) > 1.2  # a colour, not a gain
