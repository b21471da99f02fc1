"""ONNX export: state as explicit I/O, metadata, ONNX Runtime block-by-block == torch whole."""
import json

import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from bandlift.export.onnx_export import check_parity, export_generator  # noqa: E402
from bandlift.train.model import Generator, GeneratorConfig  # noqa: E402


@pytest.fixture(scope="module", params=["spectral", "spectral-envelope", "waveform"])
def exported(request, tmp_path_factory):
    torch.manual_seed(1)
    arch, _, envelope = request.param.partition("-")
    frame = 64 if arch == "waveform" else 32  # waveform: the geometry these tolerances were set on
    gen = Generator(GeneratorConfig(arch=arch, frame=frame, channels=24, dilations=[1, 2, 4, 8],
                                    envelope_bands=16 if envelope else 0, prior=bool(envelope))).eval()
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
    states = json.loads(meta["bandlift.state"])
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    assert inputs == ["audio", "cutoff"] + [s["name"] for s in states]
    assert outputs == ["audio_out"] + [s["name"] + "_out" for s in states]
    assert int(meta["bandlift.params"]) == sum(p.numel() for p in gen.parameters())
    assert json.loads(meta["bandlift.config"])["channels"] == 24


def test_export_cli_roundtrip(tmp_path, exported):
    from bandlift.rt.cli import main
    from bandlift.train.trainer import DEFAULTS, load_generator, merge

    gen, _ = exported
    ckpt = tmp_path / "g.pt"
    config = merge(DEFAULTS, {"model": gen.config.to_dict()})
    torch.save({"generator": gen.state_dict(), "config": config}, ckpt)
    assert all(torch.equal(a, b) for a, b in zip(load_generator(ckpt).state_dict().values(), gen.state_dict().values()))
    out = tmp_path / "m.onnx"
    assert main(["export", str(ckpt), "-o", str(out), "--check"]) == 0
    assert out.stat().st_size > 10_000
    assert main(["export", str(tmp_path / "missing.pt"), "-o", str(out)]) == 2


@pytest.mark.parametrize("case", ["output is the checkpoint", "output is a folder", "output under a file"])
def test_export_to_a_bad_output_is_one_line_and_loses_nothing(tmp_path, capsys, case):
    from bandlift.rt.cli import main
    from bandlift.train.trainer import DEFAULTS, merge

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


@pytest.fixture(scope="module")
def cli_export(tmp_path_factory):
    """`bandlift export` run as a user runs it (its own process, umask 022): (model path, output)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from bandlift.train.trainer import DEFAULTS, merge

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
