"""The generator: streaming equals whole, causal, homogeneous; losses learn."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bandlift.train.losses import lsd_torch, multi_resolution_stft_loss  # noqa: E402
from bandlift.train.model import Discriminators, Generator, GeneratorConfig, count_params  # noqa: E402


@pytest.fixture(scope="module", params=["spectral", "waveform"])
def gen(request):
    torch.manual_seed(0)
    return Generator(GeneratorConfig(arch=request.param, channels=16, dilations=[1, 2, 4])).eval()


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
    with torch.no_grad():
        assert torch.allclose(gen(0.01 * x, c), 0.01 * gen(x, c), atol=1e-5)


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
