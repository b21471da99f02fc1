"""ONNX export: one packed state as explicit I/O, metadata, ONNX Runtime block-by-block == torch whole; the
lean graph of the shipped architecture; re-export of a contract-1 model from its own weights."""
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from bandlift.export.onnx_export import check_parity, export_generator  # noqa: E402
from bandlift.train.model import Generator, GeneratorConfig  # noqa: E402


SHIPPED = {"context_fft": 0, "gru": 0, "exciter": False}  # the shipped architecture: the lean graph


@pytest.fixture(scope="module", params=["spectral", "spectral-envelope", "spectral-shipped", "waveform"])
def exported(request, tmp_path_factory):
    torch.manual_seed(1)
    arch, _, variant = request.param.partition("-")
    envelope = variant == "envelope"
    frame = 64 if arch == "waveform" else 32  # waveform: the geometry these tolerances were set on
    gen = Generator(GeneratorConfig(arch=arch, frame=frame, channels=24, dilations=[1, 2, 4, 8],
                                    envelope_bands=16 if envelope else 0, prior=bool(envelope),
                                    **(SHIPPED if variant == "shipped" else {}))).eval()
    if envelope:  # the prior's output layer starts at zero: give the correction something to do
        with torch.no_grad():
            gen.out.weight.normal_(0.0, 0.1)
    if request.param == "waveform":  # untrained residual weights are tiny: make the residual matter
        with torch.no_grad():
            for p in gen.parameters():
                p.mul_(3.0)
    path = export_generator(gen, tmp_path_factory.mktemp("onnx") / "g.onnx")
    return gen, path


def test_parity_two_block_sizes(exported):
    gen, path = exported
    errors = check_parity(gen, path, blocks=(64, 128, 448))
    print("max abs error per block size:", errors)
    assert max(errors.values()) < 1e-4


def test_metadata_describes_the_stream(exported):
    gen, path = exported
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert int(meta["bandlift.sample_rate"]) == 48000
    assert int(meta["bandlift.frame"]) == gen.config.frame
    assert int(meta["bandlift.delay"]) == gen.delay
    assert meta["bandlift.contract"] == "2"
    parts = json.loads(meta["bandlift.state"])
    assert [i.name for i in model.graph.input] == ["audio", "cutoff", "state"]
    assert [o.name for o in model.graph.output] == ["audio_out", "state_out"]
    size = sum(int(np.prod(p["shape"])) for p in parts)
    for value in (model.graph.input[2], model.graph.output[1]):  # [channels, S]: the parts packed
        assert value.type.tensor_type.shape.dim[1].dim_value == size
    assert int(meta["bandlift.params"]) == sum(p.numel() for p in gen.parameters())
    assert json.loads(meta["bandlift.config"])["channels"] == 24
    assert int(meta["bandlift.reach"]) == gen.reach


def test_export_cli_roundtrip(tmp_path, exported, capsys):
    """Export checks parity by default (so `train --export` does too); --no-check skips it."""
    from bandlift.rt.cli import main
    from bandlift.train.checkpoints import load_generator
    from bandlift.train.recipes import merge
    from bandlift.train.trainer import DEFAULTS

    gen, _ = exported
    ckpt = tmp_path / "g.pt"
    config = merge(DEFAULTS, {"model": gen.config.to_dict()})
    torch.save({"generator": gen.state_dict(), "config": config}, ckpt)
    assert all(torch.equal(a, b) for a, b in zip(load_generator(ckpt).state_dict().values(), gen.state_dict().values()))
    out = tmp_path / "m.onnx"
    assert main(["export", str(ckpt), "-o", str(out)]) == 0
    assert "max |onnx block-by-block - torch whole|" in capsys.readouterr().out
    assert out.stat().st_size > 10_000
    assert main(["export", str(ckpt), "-o", str(tmp_path / "unchecked.onnx"), "--no-check"]) == 0
    assert "max |onnx" not in capsys.readouterr().out
    assert main(["export", str(tmp_path / "missing.pt"), "-o", str(out)]) == 2


@pytest.mark.parametrize("case", ["output is the checkpoint", "output is a folder", "output under a file"])
def test_export_to_a_bad_output_is_one_line_and_loses_nothing(tmp_path, capsys, case):
    from bandlift.rt.cli import main
    from bandlift.train.recipes import merge
    from bandlift.train.trainer import DEFAULTS

    gen = Generator(GeneratorConfig(channels=8, dilations=[1, 2]))
    ckpt = tmp_path / "g.pt"
    torch.save({"generator": gen.state_dict(), "config": merge(DEFAULTS, {"model": gen.config.to_dict()})}, ckpt)
    before = ckpt.read_bytes()
    out = {"output is the checkpoint": ckpt, "output is a folder": tmp_path,
           "output under a file": ckpt / "m.onnx"}[case]
    assert main(["export", str(ckpt), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert ckpt.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["g.pt"]


def test_the_shipped_architecture_exports_a_lean_graph(tmp_path):
    """Same weights, same audio (parity, silence included), and ONNX Runtime runs far fewer nodes per
    live block than for the model's own `stream` exported with its states packed (what other
    configs get)."""
    from bandlift.export import lean
    from bandlift.rt.model.session import ModelSession

    torch.manual_seed(2)
    gen = Generator(GeneratorConfig(channels=24, dilations=[1, 2, 4, 8], **SHIPPED)).eval()
    assert lean.supports(gen)
    paths = {"lean": export_generator(gen, tmp_path / "lean.onnx"),
             "plain": export_generator(gen, tmp_path / "plain.onnx", lean_graph=False)}
    nodes = {}
    for name, path in paths.items():
        assert max(check_parity(gen, path, blocks=(32, 128)).values()) < 1e-5
        nodes[name] = ModelSession(path, provider="cpu").node_profile(128, calls=3)
    print({name: (sum(n.values()), n) for name, n in nodes.items()})
    assert not {"Conv", "Squeeze"} & set(nodes["lean"]), nodes["lean"]  # MatMuls, no per-block gate squeeze
    assert nodes["lean"].get("Pad", 0) <= 1 < nodes["plain"]["Pad"]  # overlap-add: one pad, not one per hop
    assert sum(nodes["lean"].values()) < 0.8 * sum(nodes["plain"].values())


@pytest.mark.parametrize("recipe", ["robust.yaml", "robust-memory.yaml", "robust-fft1024.yaml"])
def test_the_noise_fill_prior_recipes_export_a_lean_graph(tmp_path, recipe):
    """The causal noise-fill prior (band envelope, bounded correction, noise excitation, running slope;
    with or without a GRU; read through the long window, its DFT over only the bins the cutoff's octave
    reads) in the lean graph: the same audio as its own `stream` (output layer drawn at random, so that
    every term counts) block by block, at cutoffs other than the traced one, in fewer nodes per live
    block (its speed: `bandlift bench`)."""
    from bandlift.export import lean
    from bandlift.rt.model.session import ModelSession
    import bandlift.train
    from bandlift.train.recipes import read_recipe

    torch.manual_seed(3)
    model = read_recipe(Path(bandlift.train.__file__).parent / recipe)["model"]
    config = {**GeneratorConfig().to_dict(), **model, "channels": 16, "dilations": [1, 2, 4]}
    gen = Generator(GeneratorConfig.from_dict(config)).eval()
    with torch.no_grad():
        gen.out.weight.normal_(0.0, 0.05)
        gen.out.bias.normal_(0.0, 0.5)
    assert lean.supports(gen)
    paths = {"lean": export_generator(gen, tmp_path / "lean.onnx"),
             "plain": export_generator(gen, tmp_path / "plain.onnx", lean_graph=False)}
    nodes = {}
    for name, path in paths.items():
        assert max(check_parity(gen, path, blocks=(32, 128, 512)).values()) < 1e-5
        nodes[name] = ModelSession(path, provider="cpu").node_profile(128, calls=3)
    assert sum(nodes["lean"].values()) < 0.85 * sum(nodes["plain"].values()), nodes


def test_a_prior_recipe_at_its_start_exports_without_its_network(tmp_path):
    """A prior recipe's start (its output layer all zero, as `train --steps 0` keeps it: the shipped model)
    writes the output layer's bias whatever the convolutions compute: the lean graph leaves them and their
    caches out, plays the same audio block by block, and runs fewer nodes than with one output weight set."""
    from bandlift.export import lean
    from bandlift.rt.model.session import ModelSession
    import bandlift.train
    from bandlift.train.recipes import read_recipe

    torch.manual_seed(3)
    model = read_recipe(Path(bandlift.train.__file__).parent / "robust-fft1024.yaml")["model"]
    gen = Generator(GeneratorConfig.from_dict({**GeneratorConfig().to_dict(), **model, "channels": 16,
                                               "dilations": [1, 2, 4]})).eval()
    assert not gen.out.weight.any() and lean.supports(gen)
    start = export_generator(gen, tmp_path / "start.onnx")
    assert max(check_parity(gen, start, blocks=(32, 128, 512)).values()) < 1e-5
    with torch.no_grad():
        gen.out.weight[0, 0, 0] = 1e-3  # one weight: the network counts again
    trained = export_generator(gen, tmp_path / "trained.onnx")
    sessions = {name: ModelSession(path, provider="cpu") for name, path in (("start", start), ("trained", trained))}
    parts = {name: [part for part, _ in session.info.parts] for name, session in sessions.items()}
    assert "block_caches" not in parts["start"] and "block_caches" in parts["trained"], parts
    nodes = {name: sum(session.node_profile(128, calls=3).values()) for name, session in sessions.items()}
    assert nodes["start"] < nodes["trained"] - 50, nodes
    # the metadata's MFLOP/s counts the graph exported: the network's MatMuls only where they run
    mflops = {name: session.info.mflops_per_second for name, session in sessions.items()}
    network = sum(2 * w.numel() for name, w in gen.named_parameters() if "blocks" in name) * gen.config.sample_rate \
        / gen.config.frame / 1e6
    assert mflops["trained"] - mflops["start"] > 0.5 * network, (mflops, network)


def test_the_lean_graph_reads_the_priors_long_window_as_the_generator_does():
    """The lean graph's two-stage DFT of the prior's long window (no per-cutoff row gathers) gives the
    power the generator's own analysis rows give, bin for bin, loud and 80 dB down; its top-octave level
    and slope agree with the generator's at cutoffs from telephone to full band."""
    from bandlift.export import lean
    import bandlift.train
    from bandlift.train.recipes import read_recipe

    model = read_recipe(Path(bandlift.train.__file__).parent / "robust-fft1024.yaml")["model"]
    gen = Generator(GeneratorConfig.from_dict({**GeneratorConfig().to_dict(), **model, "channels": 8,
                                               "dilations": [1]})).eval()
    stream = lean.LeanSpectralStream(gen).eval()
    a, b = stream.prior_split
    x = torch.randn(2, 3, gen.prior_fft, generator=torch.Generator().manual_seed(1))
    x[1] *= 1e-4
    cutoff = torch.tensor([[3400 / 24000], [1.0]])
    with torch.no_grad():
        re, im = x @ gen.prior_cos.T, x @ gen.prior_sin.T
        reference = re * re + im * im  # [B, R, K]
        held = torch.tensor([0, 0, 1, 2])
        top, slope = stream._long_prior_bands(x.reshape(-1, a, b), held, cutoff)
        want_top, want_slope = gen._long_prior_bands(reference, gen.prior_freq, held, cutoff)
    # the power itself, bin for bin (the lean order puts bin k1 + a k2 at k1 b + k2)
    y = (x * stream.prior_window).reshape(-1, a, b)
    spectrum = ((stream.prior_stage1 @ y).reshape(-1, 4, a, b).transpose(1, 2).reshape(-1, a, 4 * b)
                * stream.prior_twiddles) @ stream.prior_stage2
    power = (spectrum * spectrum).reshape(-1, a, 2, b).sum(2).reshape(2, 3, -1)
    order = (torch.arange(a)[:, None] + a * torch.arange(b)[None, :]).reshape(-1)
    natural = torch.zeros_like(power)
    natural[..., order] = power
    bins = reference.shape[-1]
    assert torch.allclose(natural[..., :bins], reference, rtol=1e-4, atol=1e-5 * reference.amax(-1, keepdim=True).min())
    assert torch.allclose(top, want_top, rtol=1e-4) and torch.allclose(slope, want_slope, atol=1e-3)


def test_each_channel_of_a_noise_model_draws_its_own_noise(tmp_path):
    """Each row of a noise-prior model (each channel of a stream) reads its own noise, as the offline
    noise-fill draws one per channel: independent channels get independent bands at equal levels (with one
    noise for all, a wide source got a mono band), and a silent channel gets no band from its neighbour;
    a pair that carries one signal twice gets one band in both channels."""
    from bandlift.rt.engine import StreamEngine
    from bandlift.rt.model.session import ModelSession
    import bandlift.train
    from bandlift.train.recipes import read_recipe

    torch.manual_seed(3)
    model = read_recipe(Path(bandlift.train.__file__).parent / "robust.yaml")["model"]
    gen = Generator(GeneratorConfig.from_dict({**GeneratorConfig().to_dict(), **model, "channels": 16,
                                               "dilations": [1, 2, 4]})).eval()
    session = ModelSession(export_generator(gen, tmp_path / "noise.onnx"), provider="cpu")
    rng = np.random.default_rng(0)

    def band(x):
        y = StreamEngine(session, 16000, 48000, 2, 128).process(x.astype(np.float32))[:, 4800:]
        spectrum = np.fft.rfft(y, axis=1)
        spectrum[:, np.fft.rfftfreq(y.shape[1], 1 / 48000) < 9000] = 0  # the band the model made
        return np.fft.irfft(spectrum, y.shape[1], axis=1), y.std()

    wide, level = band(0.1 * rng.standard_normal((2, 32000)))
    assert wide.std(axis=1).min() > 0.01 * level and wide.std(axis=1).max() < 1.25 * wide.std(axis=1).min()
    assert abs(np.corrcoef(wide)[0, 1]) < 0.2
    left_only, level = band(np.stack([0.1 * rng.standard_normal(32000), np.zeros(32000)]))
    assert left_only[0].std() > 0.01 * level and left_only[1].std() < 1e-3 * left_only[0].std()
    mono = 0.1 * rng.standard_normal(32000)  # one signal in both channels: one band in both
    twice, level = band(np.stack([mono, mono]))
    assert twice.std() > 0.01 * level and np.array_equal(twice[0], twice[1])
    # two independent streams batched in one engine (`bench --streams 2`): each its own band, even of one signal
    y = StreamEngine(session, 16000, 48000, 2, 128, stereo_pair=False).process(np.stack([mono, mono]).astype(np.float32))
    spectrum = np.fft.rfft(y[:, 4800:], axis=1)
    spectrum[:, np.fft.rfftfreq(y.shape[1] - 4800, 1 / 48000) < 9000] = 0
    assert abs(np.corrcoef(np.fft.irfft(spectrum, axis=1))[0, 1]) < 0.2
    # a pair that turns from one signal twice into two, and back: one band, two, one again
    y = StreamEngine(session, 16000, 48000, 2, 128).process(np.stack([
        np.concatenate([mono, mono, mono]), np.concatenate([mono, 0.1 * rng.standard_normal(32000), mono])]).astype(np.float32))
    same = np.all(y[0].reshape(-1, 128) == y[1].reshape(-1, 128), axis=1)  # per block
    blocks = 96000 // 128  # of each two-second stretch (at 48 kHz)
    assert same[8:blocks].all() and not same[blocks + 8:2 * blocks].any() and same[2 * blocks + 8:].all()


def test_a_noise_model_returns_from_a_hold_playing_what_an_uninterrupted_run_plays(tmp_path):
    """The engine advances a model's noise clock (its `noise_clock` state part) over the blocks a hold
    skips: from the block after the fade-in on, the output equals an uninterrupted run's, band included
    (else the band is another stretch of the noise: 5e-2 here)."""
    from bandlift.rt.engine import StreamEngine
    from bandlift.rt.model.session import ModelSession
    import bandlift.train
    from bandlift.train.recipes import read_recipe

    torch.manual_seed(3)
    model = read_recipe(Path(bandlift.train.__file__).parent / "robust-fft1024.yaml")["model"]
    gen = Generator(GeneratorConfig.from_dict({**GeneratorConfig().to_dict(), **model, "channels": 16,
                                               "dilations": [1, 2, 4]})).eval()
    path = export_generator(gen, tmp_path / "noise.onnx")
    x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(48000) / 16000) * np.exp(-np.arange(48000) / 20000))[None]
    x = (x + np.random.default_rng(1).standard_normal(x.shape) * 0.02).astype(np.float32)
    steady = StreamEngine(ModelSession(path), 48000, 48000, 1, 128, input_cutoff_hz=8000).process(x)
    eng = StreamEngine(ModelSession(path), 48000, 48000, 1, 128, input_cutoff_hz=8000)
    blocks, active = [], []
    for i in range(x.shape[1] // 128):
        if i == 40:
            eng.force_bypass("overload")
        blocks.append(eng.process(x[:, i * 128:(i + 1) * 128]))
        active.append(eng.active)
    y, active = np.concatenate(blocks, axis=1), np.array(active)
    back = int(np.nonzero((active[1:] == 1.0) & (active[:-1] == 0.0))[0][0]) + 1
    band = np.fft.rfft(steady[0, (back + 1) * 128:y.shape[1]])
    assert np.abs(band[len(band) // 3:]).max() > 1e-3 * np.abs(band).max()  # a band to compare
    assert np.abs(y[0, (back + 1) * 128:] - steady[0, (back + 1) * 128:y.shape[1]]).max() < 1e-5


def test_reexport_of_a_contract_1_model_from_its_weights(tmp_path, capsys):
    """A model written before the packed state (one input per state, no contract version) is refused
    by the engine with the command that re-exports it; that command rebuilds the generator from the
    model's initializers and config, and the new model plays the same audio."""
    import onnxruntime as ort

    from bandlift.rt import Upsampler
    from bandlift.rt.cli import main
    from bandlift.rt.model import contract

    torch.manual_seed(3)
    gen = Generator(GeneratorConfig(channels=16, dilations=[1, 2], **SHIPPED)).eval()
    old = tmp_path / "old.onnx"
    names = [name for name, _ in gen.state_shapes()]

    class OldWrapper(torch.nn.Module):  # the contract-1 export: one input and one output per state
        def __init__(self):
            super().__init__()
            self.gen = gen

        def forward(self, audio, cutoff, *states):
            y, new = self.gen.stream(audio, cutoff, list(states))
            return (y, *new)

    with torch.no_grad():
        torch.onnx.export(OldWrapper(), (torch.zeros(1, 64), torch.full((1,), 0.5), *gen.initial_states(1)),
                          str(old), dynamo=False, opset_version=17, input_names=["audio", "cutoff", *names],
                          output_names=["audio_out", *[n + "_out" for n in names]],
                          dynamic_axes={"audio": {0: "channels", 1: "samples"}, "audio_out": {0: "channels", 1: "samples"},
                                        **{n: {0: "channels"} for n in ["cutoff", *names]}})
    model = onnx.load(str(old))
    config = {k: v for k, v in gen.config.to_dict().items() if k not in ("context_fft", "gru", "exciter")}
    meta = contract.metadata(48000, 32, gen.delay, gen.state_shapes(), "0.1.0", config=config)
    del meta[contract.CONTRACT], meta[contract.LOWEST_CUTOFF]  # (an older config lacks the keys of later features: absent = off)
    onnx.helper.set_model_props(model, meta)
    onnx.save(model, str(old))

    with pytest.raises(contract.ModelError, match=f"re-export it with `bandlift export --from-onnx {old} -o NEW.onnx`"):
        Upsampler(str(old))
    new = tmp_path / "new.onnx"
    assert main(["export", "--from-onnx", str(old), "-o", str(new), "--check"]) == 0
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((1, 2048)) * 0.1).astype(np.float32)
    cutoff = np.array([0.4], np.float32)
    session = ort.InferenceSession(str(old), providers=["CPUExecutionProvider"])
    states = {n: np.zeros((1, *s), np.float32) for n, s in gen.state_shapes()}
    before = session.run(None, {"audio": x, "cutoff": cutoff, **states})[0]
    session = ort.InferenceSession(str(new), providers=["CPUExecutionProvider"])
    after = session.run(None, {"audio": x, "cutoff": cutoff, "state": np.zeros((1, session.get_inputs()[2].shape[1]),
                                                                                 np.float32)})[0]
    assert np.abs(after - before).max() < 1e-5
    from bandlift.rt.model.session import ModelSession

    # trained before the key (4 kHz up) it stays so; a new export says what training draws today
    assert ModelSession(str(new), provider="cpu").info.lowest_cutoff_hz == contract.LEGACY_LOWEST_CUTOFF_HZ
    export_generator(gen, tmp_path / "fresh.onnx")
    assert ModelSession(str(tmp_path / "fresh.onnx"), provider="cpu").info.lowest_cutoff_hz == contract.MIN_CUTOFF_HZ
    assert main(["export", "--from-onnx", str(new), "-o", str(tmp_path / "again.onnx")]) == 2  # lean: no weights
    assert main(["export", str(tmp_path / "g.pt"), "--from-onnx", str(old), "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "lacks the weights" in err and "one of them" in err and "Traceback" not in err


def test_the_lean_graph_only_where_it_reproduces_the_model():
    """Other configs, or a replication rule the lean tables cannot express, fall back to `stream`."""
    from bandlift.export import lean

    shipped = Generator(GeneratorConfig(channels=8, dilations=[1], **SHIPPED))
    assert lean.supports(shipped)
    assert lean.supports(Generator(GeneratorConfig(channels=8, dilations=[1])))  # long context, GRU, exciter
    assert lean.supports(Generator(GeneratorConfig(channels=8, dilations=[1], envelope_bands=4, prior=True)))
    assert not lean.supports(Generator(GeneratorConfig(channels=8, dilations=[1], arch="waveform")))
    stream = shipped.stream  # a model whose stream does something else (e.g. a new option's excitation)
    shipped.stream = lambda x, cutoff, states: (lambda y, s: (y * 1.01, s))(*stream(x, cutoff, states))
    assert not lean.supports(shipped)
    shipped.stream = stream
    original = shipped._replication_source
    shipped._replication_source = lambda cutoff: original(cutoff * 0.9 + 0.05)  # not a threshold per bin at j/64
    assert not lean.supports(shipped)


@pytest.mark.parametrize("content", [b"not an onnx model", b""])
def test_reexport_of_a_file_that_is_not_a_model_is_one_line(tmp_path, capsys, content):
    from bandlift.rt.cli import main

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    assert main(["export", "--from-onnx", str(bad), "-o", str(tmp_path / "new.onnx")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and str(bad) in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


@pytest.fixture(scope="module")
def cli_export(tmp_path_factory):
    """`bandlift export` run as a user runs it (its own process, umask 022): (model path, output)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from bandlift.train.recipes import merge
    from bandlift.train.trainer import DEFAULTS

    d = tmp_path_factory.mktemp("cli_export")
    gen = Generator(GeneratorConfig(channels=8, dilations=[1, 2]))
    torch.save({"generator": gen.state_dict(), "config": merge(DEFAULTS, {"model": gen.config.to_dict()})}, d / "g.pt")
    result = subprocess.run([str(Path(sys.executable).with_name("bandlift")), "export", str(d / "g.pt"), "-o",
                             str(d / "m.onnx")], capture_output=True, text=True, timeout=600,
                            preexec_fn=lambda: os.umask(0o022))
    assert result.returncode == 0, result.stderr
    return d / "m.onnx", result.stdout + result.stderr


def test_export_writes_the_model_following_the_umask(cli_export):
    path, _ = cli_export
    assert path.stat().st_mode & 0o777 == 0o644  # as the audio outputs (was 0600: mkstemp's)


def test_export_output_has_no_torch_warnings(cli_export):
    _, output = cli_export
    assert "Warning" not in output and output.strip().startswith("wrote "), output


def run_with_overload(session, x, at_block=40):
    """x [1, n] block by block (128) through a fresh engine, an overload forced before `at_block`;
    -> output and the block that fades the model back in."""
    from bandlift.rt.engine import StreamEngine

    eng = StreamEngine(session, 48000, 48000, 1, 128, input_cutoff_hz=8000)
    ys, active = [], []
    for i in range(x.shape[1] // 128):
        if i == at_block:
            eng.force_bypass("overload")
        ys.append(eng.process(x[:, i * 128:(i + 1) * 128]))
        active.append(eng.active)
    back = next(i for i in range(1, len(active)) if active[i] == 1.0 and active[i - 1] == 0.0)
    return np.concatenate(ys, axis=1), back, eng


def test_a_model_of_longer_reach_returns_warm(tmp_path):
    """A model whose convolutions reach 8,414 samples (175 ms) back, beyond the 0.1 s warm-up of a
    model whose metadata has no reach: with its reach in the metadata it returns from an overload hold
    playing what an uninterrupted run plays once faded in; with 0.1 s it does not."""
    from bandlift.rt.engine import StreamEngine
    from bandlift.rt.model import contract
    from bandlift.rt.model.session import ModelSession

    torch.manual_seed(0)
    gen = Generator(GeneratorConfig(channels=16, context_fft=0, gru=0, exciter=False, dilations=[64, 64])).eval()
    with torch.no_grad():  # untrained output gains explode: tame them
        gen.out.weight.mul_(0.3)
        gen.out.bias.zero_()
    assert gen.reach == 95 + 2 * 128 * 32 + 127
    path = export_generator(gen, tmp_path / "long.onnx")
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert int(meta[contract.REACH]) == gen.reach
    onnx.helper.set_model_props(model, {k: v for k, v in meta.items() if k != contract.REACH})
    onnx.save(model, str(tmp_path / "no-reach.onnx"))

    n = 48000  # a chirp (100 Hz to 4 kHz): what the model held before the hold is not what it holds after
    t = np.arange(n) / 48000
    x = (0.3 * np.sin(2 * np.pi * (100 * t + 1950 * t * t))).astype(np.float32)[None]
    x += (np.random.default_rng(0).standard_normal(x.shape) * 0.01).astype(np.float32)
    steady = StreamEngine(ModelSession(path, provider="cpu"), 48000, 48000, 1, 128, input_cutoff_hz=8000).process(x)
    errors = {}
    for name, model_path in (("reach", path), ("0.1 s", tmp_path / "no-reach.onnx")):
        y, back, eng = run_with_overload(ModelSession(model_path, provider="cpu"), x)
        after = (back + 1) * 128  # the block after the fade-in (which mixes in the input)
        errors[name] = float(np.abs(y[0, after:] - steady[0, after:y.shape[1]]).max())
        print(f"{name}: warm-up {eng.warm_blocks} blocks, back at block {back}, max difference from an "
              f"uninterrupted run {errors[name]:.2e}")
    assert eng.stats.events == [(40 * 128, "overload")]
    assert errors["reach"] < 1e-5 and errors["0.1 s"] > 1e-3


def test_a_gru_model_returns_warm_within_its_bounded_reach(tmp_path):
    """A GRU's reach is bounded (RECURRENT_REACH_S beyond its convolutions): after a fault hold (its
    state reset) the model warmed up for that long plays what an uninterrupted run plays, to float
    rounding for this untrained one."""
    from bandlift.rt.engine import StreamEngine
    from bandlift.rt.model.session import ModelSession
    from bandlift.train.model import RECURRENT_REACH_S

    torch.manual_seed(0)
    gen = Generator(GeneratorConfig(channels=16, gru=16, context_fft=0, exciter=False)).eval()
    with torch.no_grad():  # untrained output gains explode: tame them
        gen.out.weight.mul_(0.3)
        gen.out.bias.zero_()
    assert gen.reach == 4190 + round(RECURRENT_REACH_S * 48000)
    session = ModelSession(export_generator(gen, tmp_path / "gru.onnx"), provider="cpu")
    t = np.arange(48000) / 48000
    x = (0.3 * np.sin(2 * np.pi * (100 * t + 1950 * t * t))).astype(np.float32)[None]
    steady = StreamEngine(session, 48000, 48000, 1, 128, input_cutoff_hz=8000).process(x)
    eng = StreamEngine(session, 48000, 48000, 1, 128, input_cutoff_hz=8000)
    ys = []
    for i in range(x.shape[1] // 128):
        if i == 40:
            eng.force_bypass("nan")  # as a fault: the state is reset
        ys.append(eng.process(x[:, i * 128:(i + 1) * 128]))
        if i > 40 and eng.active == 1.0:
            break
    ys.append(eng.process(x[:, (i + 1) * 128:]))
    y = np.concatenate(ys, axis=1)
    assert eng.warm_blocks == -(-gen.reach // 128) and eng.stats.events == [(40 * 128, "nan")]
    after = (i + 1) * 128
    assert np.abs(y[0, after:] - steady[0, after:y.shape[1]]).max() < 1e-5
