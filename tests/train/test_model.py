"""The generator: streaming equals whole, causal, homogeneous; losses learn."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bandlift.train.losses import (  # noqa: E402
    band_dynamics_loss,
    band_energies,
    band_envelope_loss,
    band_shape_loss,
    lsd_torch,
    multi_resolution_stft_loss,
)
from bandlift.train.discriminators import Discriminators  # noqa: E402
from bandlift.train.layers import count_params  # noqa: E402
from bandlift.train.model import RECURRENT_REACH_S, Generator, GeneratorConfig, envelope_basis  # noqa: E402


@pytest.fixture(scope="module", params=["spectral", "spectral-envelope", "spectral-noise", "spectral-longprior",
                                        "spectral-fastprior", "waveform"])
def gen(request):
    torch.manual_seed(0)
    arch, _, envelope = request.param.partition("-")
    # the causal noise-fill prior: noise excitation, running tilt, bounded correction (read through a long window)
    noise = envelope in ("noise", "longprior", "fastprior")
    gen = Generator(GeneratorConfig(arch=arch, channels=16, dilations=[1, 2, 4], envelope_bands=12 if envelope else 0,
                                    prior=bool(envelope), noise=noise, prior_tilt_s=0.2 if noise else 0.0,
                                    correction_db=12.0 if noise else 0.0,
                                    prior_fft=512 if envelope in ("longprior", "fastprior") else 0,
                                    prior_fast_level=envelope == "fastprior")).eval()
    if envelope:  # the prior's output layer starts at zero: give the correction something to do
        with torch.no_grad():
            gen.out.weight.normal_(0.0, 0.1)
    return gen


@pytest.mark.parametrize("block", [64, 192, 1024])
def test_block_by_block_equals_whole(gen, block):
    x = torch.randn(2, 4096)
    cutoff = torch.tensor([0.33, 0.8])
    with torch.no_grad():
        whole = gen(x, cutoff)
        states, parts = gen.initial_states(2), []
        for i in range(0, x.shape[1], block):
            y, states = gen.stream(x[:, i:i + block], cutoff, states)
            parts.append(y)
    streamed = torch.cat(parts, -1)[:, gen.delay:]  # the stream runs `delay` samples late
    err = (streamed - whole[:, : x.shape[1] - gen.delay]).abs().max().item()
    print(f"{type(gen).__name__} block {block}: max |stream - whole| = {err:.2e}")
    assert err < 1e-5


def test_causal_beyond_delay_and_one_frame(gen):
    """Changing the future never changes output more than one frame back."""
    x = torch.randn(1, 2048)
    x2 = x.clone()
    x2[:, 1024:] = torch.randn(1, 1024)
    c = torch.tensor([0.5])
    with torch.no_grad():
        a, b = gen(x, c), gen(x2, c)
    lookahead = gen.delay + gen.config.frame  # delay-compensated output: delay + up to one frame
    assert torch.equal(a[:, : 1024 - lookahead], b[:, : 1024 - lookahead])
    assert not torch.equal(a[:, 1024:], b[:, 1024:])


def test_positively_homogeneous(gen):
    x, c = torch.randn(1, 2048), torch.tensor([0.4])
    # above the prior's silence gate (-80 dB): a long window's first frames hold only a few samples,
    # and at -40 dB they fall under it (a fade-in from silence, as at the start of any stream)
    scale = 0.5 if getattr(gen.config, "prior_fft", 0) else 0.01
    with torch.no_grad():
        assert torch.allclose(gen(scale * x, c), scale * gen(x, c), atol=1e-5)


def test_spectral_generator_reconstructs_perfectly_and_replaces_only_the_high_band():
    g = Generator(GeneratorConfig(channels=8, dilations=[1])).eval()
    with torch.no_grad():
        g.out.bias.fill_(-60.0)  # generate nothing: the output is x with its band above the cutoff removed
        x = torch.randn(1, 9600) * 0.1
        y = g(x, torch.tensor([1.0]))[0].numpy()  # cutoff at Nyquist: nothing replaced
        assert np.max(np.abs(y - x[0].numpy())) < 1e-5
        y = g(x, torch.tensor([0.5]))[0].numpy()
    spectrum = np.abs(np.fft.rfft(y[1000:-1000])) ** 2
    freqs = np.fft.rfftfreq(len(y) - 2000, 1 / 48000)
    assert spectrum[freqs > 13000].sum() < 1e-3 * spectrum[freqs < 11000].sum()


def test_spectral_generator_leaves_the_passband_untouched():
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(channels=16, dilations=[1, 2])).eval()
    x = torch.randn(1, 9600) * 0.1
    with torch.no_grad():
        residual = (g(x, torch.tensor([8000 / 24000])) - x)[0].numpy()
    spectrum = np.abs(np.fft.rfft(residual)) ** 2
    freqs = np.fft.rfftfreq(len(residual), 1 / 48000)
    # Only bins from the cutoff's (7875 Hz) up are written; gains that jump frame to frame (an
    # untrained GRU's) leak through the short sqrt-Hann window's sidelobes: allow -30 dB in all.
    assert spectrum[freqs < 7000].sum() < 1e-3 * spectrum[freqs > 8500].sum()


def test_discriminators_and_size():
    d = Discriminators()
    outs = d(torch.randn(2, 8192))
    assert len(outs) == 8 and all(o.shape[0] == 2 for o, _ in outs)
    assert count_params(Generator()) < 1_000_000  # a few MB of ONNX at most


def test_stft_loss_trains_toward_target():
    """A few optimiser steps on one band-limited clip reduce the loss and the LSD."""
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(channels=16, dilations=[1, 2]))
    t = torch.arange(9600) / 48000
    target = (torch.sin(2 * np.pi * 440 * t) * 0.3 + 0.05 * torch.randn(9600))[None]
    window = torch.hann_window(257)
    lowpass = torch.sinc(2 * 0.25 * (torch.arange(257) - 128)) * 0.5 * window
    x = torch.nn.functional.conv1d(target[None], lowpass.view(1, 1, -1), padding=128)[0]
    c = torch.tensor([0.25])
    opt = torch.optim.Adam(g.parameters(), 3e-3)
    first = None
    for _ in range(40):
        loss = multi_resolution_stft_loss(g(x, c), target)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first
    with torch.no_grad():
        assert lsd_torch(g(x, c), target).item() < lsd_torch(x, target).item()


def test_digital_silence_gives_finite_gradients():
    """Silence in -> exact zeros out (no biases): the STFT loss must still give finite gradients."""
    g = Generator(GeneratorConfig(channels=8, dilations=[1]))
    x = torch.zeros(2, 4096)
    x[1, 2048:] = torch.randn(2048) * 0.1
    loss = multi_resolution_stft_loss(g(x, torch.tensor([0.3, 0.3])), x)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in g.parameters())


def test_envelope_basis_interpolates_band_gains_smoothly_across_bins():
    basis = envelope_basis(16, 65, 48000)
    assert torch.allclose(basis.sum(0), torch.ones(65))  # a flat envelope stays flat
    assert torch.all(basis >= 0)
    assert basis[0, :5].eq(1).all() and basis[-1, -1] == 1  # flat below the first centre, Nyquist on the last
    ramp = torch.arange(16, dtype=torch.float32) @ basis  # band index -> bins: monotonic, no plateaus or jumps
    steps = ramp[5:] - ramp[4:-1]  # above the first centre (1.5 kHz, bin 4), one bin moves < 1.25 bands
    assert torch.all(steps > 0) and steps.max() < 1.25


def test_envelope_model_writes_a_smooth_band_and_a_legacy_checkpoint_still_loads():
    g = Generator(GeneratorConfig(channels=8, dilations=[1], envelope_bands=8)).eval()
    assert g.out.out_channels == 16  # 8 gains + 8 excitation mixes, not 2 x 65 bins
    assert not any("analysis" in key or "envelope" in key for key in g.state_dict())  # derived, not stored
    legacy = {**g.state_dict(), "analysis_cos": torch.zeros(1), "synthesis_sin": torch.zeros(1)}
    g.load_state_dict(legacy)  # older checkpoints carried the DFT matrices: dropped, not an error


def white_noise_and_band_gains():
    """1 s of white noise at 48 kHz, cutoff 8 kHz, ceiling 16 kHz, and a function that returns it with
    an amplitude gain on the bins a condition on their frequency selects."""
    torch.manual_seed(0)
    rate, n = 48000, 48000
    target = torch.randn(1, n)
    spectrum = torch.fft.rfft(target)
    freqs = torch.fft.rfftfreq(n, 1 / rate)

    def with_gain(selected, gain):
        return torch.fft.irfft(spectrum * torch.where(selected(freqs), gain, 1.0), n=n)

    return target, with_gain, torch.tensor([8000.0]), torch.tensor([16000.0]), rate


def test_band_envelope_loss_reads_decibels_above_the_cutoff_and_below_the_ceiling():
    target, with_gain, cutoff, ceiling, rate = white_noise_and_band_gains()
    louder_high = with_gain(lambda f: f >= 8000, 2.0)  # +6.02 dB above 8 kHz
    louder_low = with_gain(lambda f: f < 7000, 2.0)
    louder_top = with_gain(lambda f: f > 17000, 2.0)
    assert band_envelope_loss(target, target, cutoff, ceiling, rate) == 0
    assert abs(band_envelope_loss(louder_high, target, cutoff, ceiling, rate).item() - 6.02) < 0.2
    assert band_envelope_loss(louder_low, target, cutoff, ceiling, rate) < 0.05  # the passband is not its business
    assert band_envelope_loss(louder_top, target, cutoff, ceiling, rate) < 0.05  # nor the band a lossy file lacks


def test_band_shape_loss_reads_the_spread_over_the_bands_not_the_level():
    target, with_gain, cutoff, ceiling, rate = white_noise_and_band_gains()
    louder_high = with_gain(lambda f: f >= 8000, 2.0)  # +6 dB, same shape
    tilted = with_gain(lambda f: f >= 12000, 2.0)  # upper half +6 dB
    louder_top = with_gain(lambda f: f > 17000, 4.0)
    assert band_shape_loss(target, target, cutoff, ceiling, rate) == 0
    assert band_shape_loss(louder_high, target, cutoff, ceiling, rate) < 0.05  # the level is not its business
    assert band_envelope_loss(louder_high, target, cutoff, ceiling, rate) > 5.5  # (the envelope loss's)
    # 3 bands per octave from 1 kHz: 8-10.1, 10.1-12.7 (its top quarter +6 dB: +2.6 dB), 12.7-16 (+6 dB);
    # around their mean (+2.9 dB) they are 2.9, 0.3 and 3.2 dB off: 2.1 dB on average
    assert 1.7 < band_shape_loss(tilted, target, cutoff, ceiling, rate).item() < 2.5
    assert band_shape_loss(louder_top, target, cutoff, ceiling, rate) < 0.05  # nor the band a lossy file lacks
    # the trainer computes the band energies once per step and hands them to each band loss
    energies = band_energies(tilted, target, cutoff, ceiling, rate)
    assert band_shape_loss(None, None, None, None, rate, energies=energies) == band_shape_loss(tilted, target, cutoff, ceiling, rate)
    assert band_envelope_loss(None, None, None, None, rate, energies=energies) == band_envelope_loss(tilted, target, cutoff, ceiling, rate)


def test_band_dynamics_loss_asks_the_band_to_move_with_the_reference():
    torch.manual_seed(0)
    rate, n = 48000, 48000
    swell = torch.linspace(0.01, 1.0, n)  # the reference's high band rises 40 dB over the clip
    target = torch.randn(1, n) * swell
    cutoff, ceiling = torch.tensor([8000.0]), torch.tensor([24000.0])

    def loss(y):
        return band_dynamics_loss(y, target, cutoff, ceiling, rate).item()

    assert loss(target) < 1e-4
    assert loss(3.0 * torch.randn(1, n) * swell) < 0.05  # right moves, wrong level: the envelope loss's job
    assert loss(0.5 * torch.randn(1, n)) > 0.8  # a steady level that hedges: no correlation
    assert loss(torch.randn(1, n) * swell.flip(0)) > 1.5  # moving against it


def test_band_dynamics_loss_has_a_finite_gradient_where_a_band_never_moves():
    """A band outside a clip's cutoff..ceiling has no bins: its dB is the floor in every frame, variance
    exactly 0, where sqrt's gradient is 0/0: masked out, it still made every gradient NaN, and the robust
    recipe skipped ~97 % of its generator updates (metrics.csv's `skipped`: 9 740 of 10 000 steps)."""
    frames = 24
    moving = torch.linspace(-30.0, 0.0, frames)
    db_y = torch.stack([torch.full((frames,), -50.0), moving.flip(0)])[None].requires_grad_()  # [1, bands, T]
    db_t = torch.stack([torch.full((frames,), -50.0), moving])[None]
    valid = torch.tensor([[[0.0], [1.0]]])  # the first band lies below the cutoff
    loss = band_dynamics_loss(None, None, None, None, 48000, energies=(db_y, db_t, valid))
    loss.backward()
    assert loss.item() == pytest.approx(2.0, abs=1e-3)  # the valid band moves against the reference
    assert torch.isfinite(db_y.grad).all() and db_y.grad[0, 1].abs().sum() > 0


def test_prior_starts_the_generator_as_the_noise_fill_envelope():
    """At init (zero correction) the band above the cutoff follows the passband's top octave and falls
    12 dB per octave above it: the shaped noise-fill baseline, which training then corrects."""
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(channels=8, dilations=[1, 2], envelope_bands=8, prior=True)).eval()
    rate, n = 48000, 48000 * 2
    freqs = np.fft.rfftfreq(n, 1 / rate)
    noise = np.fft.rfft(np.random.default_rng(0).standard_normal(n))

    def band_db(top_gain, low, high):
        spectrum = noise * (freqs < 8000) * np.where(freqs > 4000, top_gain, 1.0)
        x = torch.tensor(np.fft.irfft(spectrum, n=n), dtype=torch.float32)[None]
        with torch.no_grad():
            y = g(x, torch.tensor([1 / 3]))[0].numpy()
        power = np.abs(np.fft.rfft(y)) ** 2
        return 10 * np.log10(power[(freqs >= low) & (freqs < high)].mean())

    assert band_db(1.0, 9000, 10000) - band_db(1.0, 18000, 20000) == pytest.approx(12.0, abs=1.5)
    assert band_db(2.0, 9000, 10000) - band_db(1.0, 9000, 10000) == pytest.approx(6.0, abs=1.0)


def noise_prior_generator(prior_fft: int = 0):
    torch.manual_seed(0)
    return Generator(GeneratorConfig(channels=8, dilations=[1, 2], context_fft=0, gru=0, exciter=False,
                                     envelope_bands=16, prior=True, noise=True, prior_tilt_s=0.5,
                                     correction_db=12.0, prior_fft=prior_fft)).eval()


def band_levels_db(y, rate, bands, frame=480):
    """Each 10 ms frame's power in each band (dB) of a 1-D signal."""
    frames = y[: len(y) // frame * frame].reshape(-1, frame) * np.hanning(frame)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(frame, 1 / rate)
    return np.stack([10 * np.log10(power[:, (freqs >= lo) & (freqs < hi)].mean(1) + 1e-20) for lo, hi in bands], 1)


def test_noise_prior_starts_as_a_causal_noise_fill_that_follows_the_passband_frame_by_frame():
    """Untrained, the band above the cutoff is noise at the level the passband's top octave sets, falling
    with the passband's own slope (clipped to -3 dB/octave for white noise) and bending down above the
    cutoff; a 20 dB step in the passband's level reaches the generated band within 10 ms."""
    g, rate = noise_prior_generator(), 48000
    n = 2 * rate
    freqs = np.fft.rfftfreq(n, 1 / rate)
    white = np.fft.irfft(np.fft.rfft(np.random.default_rng(0).standard_normal(n)) * (freqs < 8000), n=n)
    x = white * np.where(np.arange(n) < rate, 0.01, 0.1)  # +20 dB at 1 s
    with torch.no_grad():
        y = g(torch.tensor(x, dtype=torch.float32)[None], torch.tensor([1 / 3]))[0].numpy()
    levels = band_levels_db(y, rate, [(5000, 7000), (9000, 11000), (14000, 16000)])
    before, after = levels[60:95].mean(0), levels[105:190].mean(0)
    assert after - before == pytest.approx([20, 20, 20], abs=1.0)  # every band follows the level
    assert levels[101, 1] - before[1] > 17  # within 10 ms of the step
    # the passband is white: -3 dB/octave (the clip) from 0.7 x cutoff, minus 3 dB/octave^2 above the cutoff
    expected = [-3 * np.log2(f / 5600) - 3 * max(np.log2(f / 8000), 0) ** 2 for f in (10000, 15000)]
    assert after[1:] - after[0] == pytest.approx(expected, abs=1.5)
    # noise, not a copy of the passband: the generated band is uncorrelated with the band below shifted up
    assert abs(np.corrcoef(levels[105:190, 1], levels[105:190, 0])[0, 1]) < 0.5


def test_noise_prior_reads_the_tilt_from_the_passband_and_its_correction_is_bounded():
    g, rate = noise_prior_generator(), 48000
    n = 2 * rate
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spectrum = np.fft.rfft(np.random.default_rng(1).standard_normal(n)) * (freqs < 8000)

    def slope(db_per_octave):
        shaped = spectrum * (np.maximum(freqs, 2000) / 2000) ** (db_per_octave / 20 / np.log10(2))
        x = 0.05 * np.fft.irfft(shaped, n=n) / np.std(np.fft.irfft(shaped, n=n))
        with torch.no_grad():
            y = g(torch.tensor(x, dtype=torch.float32)[None], torch.tensor([1 / 3]))[0].numpy()
        low, high = band_levels_db(y, rate, [(8500, 9500), (17000, 19000)])[100:].mean(0)
        return high - low  # the generated band's fall over the octave above 9 kHz

    assert slope(-6.0) - slope(-18.0) == pytest.approx(12.0, abs=2.0)
    assert slope(-30.0) == pytest.approx(slope(-24.0), abs=1.0)  # clipped at -24 dB/octave
    with torch.no_grad():  # the largest correction the output layer can ask for is +-12 dB
        g.out.bias[:16] = 100.0
        x = torch.tensor(np.fft.irfft(spectrum, n=n) * 0.05, dtype=torch.float32)[None]
        boosted = g(x, torch.tensor([1 / 3]))[0].numpy()
        g.out.bias[:16] = 0.0
        plain = g(x, torch.tensor([1 / 3]))[0].numpy()
    gain = band_levels_db(boosted, rate, [(12000, 16000)])[50:] - band_levels_db(plain, rate, [(12000, 16000)])[50:]
    assert gain.mean() == pytest.approx(12.0, abs=1.0)


def test_the_long_prior_reads_the_floor_between_partials_and_the_level_of_noise():
    """prior_fft: 1024 reads the top octave as the offline noise-fill does (47 Hz bins): on white noise
    its band has the short prior's level; on partials 400 Hz apart over a floor 40 dB below them it
    follows the floor between them (the mean dB), where the model's 375 Hz frames see the partials'
    power in every bin and fill the band far louder."""
    rate, n = 48000, 2 * 48000
    t = np.arange(n) / rate
    freqs = np.fft.rfftfreq(n, 1 / rate)
    floor = np.fft.irfft(np.fft.rfft(np.random.default_rng(2).standard_normal(n)) * (freqs < 8000), n=n)
    partials = sum(np.sin(2 * np.pi * f * t + f) for f in np.arange(400, 8000, 400))
    short, long = noise_prior_generator(), noise_prior_generator(prior_fft=1024)

    def band_db(g, x):
        with torch.no_grad():
            y = g(torch.tensor(x, dtype=torch.float32)[None], torch.tensor([1 / 3]))[0].numpy()
        return band_levels_db(y, rate, [(9000, 11000)])[50:, 0].mean()

    noise = 0.01 * floor / floor.std()
    assert band_db(long, noise) == pytest.approx(band_db(short, noise), abs=1.5)
    tonal = 0.01 * partials / partials.std() + 0.01 * floor / floor.std() * 10 ** (-40 / 20) * np.sqrt(1 / 19)
    assert band_db(short, tonal) - band_db(long, tonal) > 8.0


def receptive_field(gen, length: int) -> int:
    """Measured reach: for the last two samples of a frame near the end of a stream (the last sample of
    a frame reaches furthest back), the furthest input sample before it that its gradient reaches."""
    gen = gen.double()
    worst = 0
    for t in (length - gen.config.frame - 2, length - gen.config.frame - 1):
        x = torch.randn(1, length, dtype=torch.float64, requires_grad=True)
        y, _ = gen.stream(x, torch.tensor([0.5], dtype=torch.float64), [s.double() for s in gen.initial_states(1)])
        y[0, t].backward()
        worst = max(worst, t - int(torch.nonzero(x.grad[0]).min()))
    return worst


@pytest.mark.parametrize("config", [
    dict(context_fft=0, gru=0, exciter=False),  # the shipped architecture
    dict(context_fft=2048, gru=0, dilations=[1, 2, 4]),  # the long context reaches furthest
    dict(arch="waveform", frame=64, dilations=[1, 2, 4]),
])
def test_reach_is_the_measured_receptive_field(config):
    torch.manual_seed(0)
    gen = Generator(GeneratorConfig(channels=8, **config)).eval()
    if config.get("context_fft") == 0:
        assert gen.reach == 4190  # 95 + 124 frames of 32 + 127: 87 ms
    assert receptive_field(gen, (gen.reach // gen.config.frame + 4) * gen.config.frame) == gen.reach


@pytest.mark.parametrize("config,fir", [
    (dict(gru=8), 95 + 6 * 32 + 127),  # the convolutions: (kernel 3 - 1) x (1 + 2) frames
    (dict(prior=True, noise=True, prior_tilt_s=0.2), 95 + 7 * 32 + 127),  # the prior's level: 8 frames
    # ... of its long window, read every 4th frame: up to 3 frames before
    (dict(prior=True, noise=True, prior_tilt_s=0.2, prior_fft=512), 95 + 10 * 32 + 511),
])
def test_recurrent_parts_reach_the_whole_past_and_their_reach_is_bounded(config, fir):
    """A GRU and the prior's running tilt: the gradient reaches the first sample; the reach is the
    finite part's plus RECURRENT_REACH_S."""
    torch.manual_seed(0)
    geometry = dict(channels=8, context_fft=0, dilations=[1, 2])
    gen = Generator(GeneratorConfig(**geometry, **config)).eval()
    if config.get("prior"):  # its output layer starts at zero: let the gains depend on the input
        with torch.no_grad():
            gen.out.weight.normal_(0.0, 0.1)
    assert gen.reach == fir + round(RECURRENT_REACH_S * 48000)
    assert receptive_field(gen, 2048) == 2048 - gen.config.frame - 1  # down to the first sample


@pytest.mark.parametrize("prior_fft", [0, 1024])
def test_the_prior_follows_a_quiet_recording_as_it_follows_the_same_one_loud(prior_fft):
    """prior_active_db -120 (the robust recipes): a recording 60 dB down (a top octave near -100 dB re full
    scale) gets the band it gets loud, 60 dB down; the earlier floor, -80, froze the slope there at its
    starting -12 dB/octave where the passband falls 6 dB/octave."""
    rate, n = 48000, 48000
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spectrum = np.fft.rfft(np.random.default_rng(3).standard_normal(n)) * (freqs < 8000)
    shaped = np.fft.irfft(spectrum * (np.maximum(freqs, 2000) / 2000) ** (-6.0 / 20 / np.log10(2)), n=n)
    x = torch.tensor(0.05 * shaped / shaped.std(), dtype=torch.float32)[None]

    def fall_db(active_db, scale):
        torch.manual_seed(0)
        g = Generator(GeneratorConfig(channels=8, dilations=[1, 2], context_fft=0, gru=0, exciter=False,
                                      envelope_bands=16, prior=True, noise=True, prior_tilt_s=0.5, correction_db=12.0,
                                      prior_fft=prior_fft, prior_active_db=active_db)).eval()
        with torch.no_grad():
            y = g(scale * x, torch.tensor([1 / 3]))[0].numpy() / scale
        low, high = band_levels_db(y, rate, [(8500, 9500), (17000, 19000)])[50:].mean(0)
        return high - low

    loud, quiet, frozen = fall_db(-120.0, 1.0), fall_db(-120.0, 1e-3), fall_db(-80.0, 1e-3)
    print(f"band fall 8.5-9.5 -> 17-19 kHz: loud {loud:.1f} dB, quiet {quiet:.1f}, quiet at -80 {frozen:.1f}")
    assert quiet == pytest.approx(loud, abs=0.5)
    assert fall_db(-80.0, 1.0) == pytest.approx(loud, abs=0.5) and frozen < loud - 3.0


def test_correction_bias_loss_reads_the_bands_shift_not_its_moves_and_only_above_the_cutoff():
    """The model's correction (dB, and each band's share above the cutoff) as training sees it: a uniform
    +2 dB costs 4 dB^2; a correction that moves +-3 dB with the content but averages zero costs nothing;
    bands wholly below every clip's cutoff (the passband, which the output never hears) cost nothing."""
    from bandlift.train.losses import correction_bias_loss

    g = noise_prior_generator().train()
    x, cutoff = torch.randn(2, 4800), torch.tensor([1 / 3, 2 / 3])

    def bias_after(bias_db):
        with torch.no_grad():
            g.out.bias[:16] = torch.as_tensor(bias_db, dtype=torch.float32) * np.log(10) / 20
            g(x, cutoff)
        return float(correction_bias_loss(g.last_correction))

    assert bias_after(0.0) == 0.0
    assert bias_after(2.0) == pytest.approx(4.0, rel=0.02)
    below = torch.zeros(16)
    below[:4] = 6.0  # centres 1.5-3 kHz: under both cutoffs (8 and 16 kHz)
    assert bias_after(below) == pytest.approx(0.0, abs=1e-6)
    db, reach = g.last_correction  # a correction that moves from -3 to +3 dB over the clip, zero on average
    moving = torch.linspace(-3.0, 3.0, db.shape[1])[None, :, None].expand_as(db)
    assert float(correction_bias_loss((moving, reach))) == pytest.approx(0.0, abs=1e-6)
    assert correction_bias_loss(None) == 0.0  # a model without a correction
