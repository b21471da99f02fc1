"""`bandlift bench`: offline statistics and JSON/PNG output; `--live` round trip on a real JACK server."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bandlift.rt.cli import main
from jack_server import JackServer, build_model, running_jack


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {"conv": build_model(d / "conv.onnx", "conv", delay=2),
            "slow": build_model(d / "slow.onnx", "delay", slow_matmuls=12)}


def test_offline_bench_reports_model_and_bypass(models, tmp_path):
    js = tmp_path / "b.json"
    assert main(["bench", "--model", str(models["conv"]), "--seconds", "1", "--block", "64", "128",
                 "--input-rate", "16000", "--json", str(js)]) == 0
    r = json.loads(js.read_text())
    for key in ("latency_ms", "block_ms_p50", "block_ms_p99", "block_ms_max", "rtf", "deadline_misses"):
        assert key in r and key in r["bypass"]
    assert r["block"] == 128 and set(r["per_block"]) == {"64", "128"}
    # latency from the parts: resampler (16k -> 48k) + model delay + block
    from bandlift.rt.dsp.resample import StreamingResampler

    assert r["latency_ms"] == pytest.approx((StreamingResampler(16000, 48000).delay + 2 + 128) / 48)
    assert r["block_ms_p50"] <= r["block_ms_p99"] <= r["block_ms_max"]
    assert r["blocks"] == 48000 // 128 and 0 < r["rtf"] < 1


def test_offline_bench_png(models, tmp_path):
    pytest.importorskip("matplotlib", reason="--png needs the eval extra")
    png = tmp_path / "b.png"
    assert main(["bench", "--model", str(models["conv"]), "--seconds", "0.3", "--block", "128",
                 "--png", str(png)]) == 0
    assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"


def test_offline_bench_reports_flops_cpu_time_and_batched_streams(models, tmp_path):
    js = tmp_path / "b.json"
    assert main(["bench", "--model", str(models["conv"]), "--seconds", "0.3", "--block", "128", "256",
                 "--streams", "1", "4", "--json", str(js)]) == 0
    r = json.loads(js.read_text())
    assert r["model_mflops_per_second"] == 0.1  # the test model's metadata
    for n in ("1", "4"):
        for b in ("128", "256"):
            s = r["per_streams"][n][b]
            assert s["streams"] == int(n) and s["blocks"] == int(0.3 * 48000) // int(b)
            assert s["achieved_gflops"] == pytest.approx(0.1 * int(n) * int(b) / 48000 / s["model_ms_p50"])
            assert 0 < s["model_ms_p50"] <= s["block_ms_max"] and 0 < s["block_cpu_ms_p50"] <= s["block_cpu_ms_p99"]
            assert s["realtime_streams"] == pytest.approx(int(n) / s["rtf"])
    assert r["per_block"]["128"] == r["per_streams"]["1"]["128"]


def test_gpu_check_cpu_path(models, tmp_path, capsys):
    """The GPU check's code on the CPU (--provider cpu): parity, block times, batched streams."""
    js = tmp_path / "gpu.json"
    assert main(["bench", "--gpu-check", "--provider", "cpu", "--model", str(models["conv"]), "--seconds", "0.2",
                 "--block", "64", "128", "--streams", "1", "8", "--json", str(js)]) == 0
    r = json.loads(js.read_text())
    assert r["provider"] == "cpu" and r["parity_ok"] and r["parity_max_abs"] == 0.0
    assert set(r["blocks"]) == {"64", "128"} and set(r["streams"]) == {"1", "8"}
    assert r["streams"]["8"]["streams"] == 8 and r["streams"]["8"]["block"] == 128
    assert "parity with CPU" in capsys.readouterr().err


def test_gpu_check_without_gpu_says_so(models, capsys):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    assert main(["bench", "--gpu-check", "--model", str(models["conv"])]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no GPU:") and len(out.splitlines()) == 1


def test_offline_bench_at_44k_output(models, tmp_path):
    js = tmp_path / "b.json"
    assert main(["bench", "--model", str(models["conv"]), "--seconds", "0.5", "--block", "128",
                 "--input-rate", "16000", "--rate", "44100", "--json", str(js)]) == 0
    r = json.loads(js.read_text())
    from bandlift.rt.dsp.resample import StreamingResampler

    # in samples at 44.1 kHz: (16k -> 48k resampler + model delay 2) at 48 kHz made whole, + 48k -> 44.1k
    # resampler, + one 128-sample model block
    d_in, d_out = StreamingResampler(16000, 48000).delay, StreamingResampler(48000, 44100).delay
    latency = -(-(d_in + 2) * 441 // 480) + d_out + -(-128 * 441 // 480)
    assert r["rate"] == 44100 and r["latency_samples"] == latency
    assert r["latency_ms"] == pytest.approx(latency / 44.1)
    assert r["blocks"] == 24000 // 128 and r["budget_ms"] == pytest.approx(128 / 48)  # model blocks
    assert 0 < r["rtf"] < 1 and 0 < r["bypass"]["rtf"] < 1


def test_offline_bench_counts_deadline_misses(models, tmp_path):
    js = tmp_path / "b.json"
    assert main(["bench", "--model", str(models["slow"]), "--seconds", "0.2", "--block", "64",
                 "--json", str(js)]) == 0
    r = json.loads(js.read_text())
    budget = 64 / 48
    if r["block_ms_p50"] < budget:
        pytest.skip(f"slow model not slow here ({r['block_ms_p50']:.2f} ms)")
    assert r["deadline_misses"] >= r["blocks"] // 2 and r["rtf"] > 1
    assert r["bypass"]["deadline_misses"] <= 2 and r["bypass"]["rtf"] < 0.5


@pytest.mark.live
@pytest.mark.skipif(not JackServer.available(), reason="jackd/jack_lsp not installed (apt jackd2)")
@pytest.mark.parametrize("rate,period,block", [(48000, 128, 128), (48000, 64, 64), (44100, 128, 128)])
def test_live_bench_roundtrip_matches_declared(models, tmp_path, rate, period, block):
    js = tmp_path / "live.json"
    with running_jack(rate, period):
        for _ in range(3):  # xruns of the shared machine may take clicks: a run that kept too few is repeated
            assert main(["bench", "--live", "--input", "loopback", "--output", "loopback", "--model",
                         str(models["conv"]), "--block", str(block), "--seconds", "2.5", "--rate", str(rate),
                         "--json", str(js)]) == 0
            r = json.loads(js.read_text())
            if r["clicks_detected"] >= 8:
                break
    print(f"\n{rate} Hz, period {period}: round trip {r['roundtrip_ms']:.2f} ms (declared "
          f"{r['declared_latency_ms']:.2f}), xruns {r['xruns']}, late {r['late_blocks']}")
    if rate == 48000:  # 2 (model delay) + one block of buffering + JACK's period + device block
        assert r["declared_latency_samples"] == 2 + block + period + block
    else:  # resampling 44.1 -> 48 -> 44.1 kHz around the model adds its delay and buffering
        assert r["declared_latency_samples"] > 2 + block + period + block
    assert r["roundtrip_samples"] == r["declared_latency_samples"]
    assert r["roundtrip_exact_fraction"] >= 0.5 and r["clicks_detected"] >= 8
    assert "xruns" in r and np.isfinite(r["block_ms_p99"])


def test_offline_bench_splits_a_model_call_into_fixed_and_per_sample_cost(tmp_path):
    onnx = pytest.importorskip("onnx")
    from pathlib import Path

    model = Path(__file__).parents[1] / "fixtures" / "speed_reference.onnx"
    js = tmp_path / "b.json"
    assert main(["bench", "--model", str(model), "--seconds", "0.5", "--block", "128", "512", "--json", str(js)]) == 0
    r = json.loads(js.read_text())
    for block in (128, 512):  # two sizes: the line passes through both medians
        line = r["model_call_fixed_ms"] + r["model_call_us_per_sample"] * block / 1e3
        assert line == pytest.approx(r["per_block"][str(block)]["model_ms_p50"], rel=1e-6)
    assert r["model_call_fixed_ms"] > 0  # (the per-sample slope of a 0.5 s run is within timing noise)
    written = onnx.load(str(model)).graph.node
    # the lean graph: 10 blocks x 2 MatMuls, the input layer, STFT and inverse, power, level and excitation
    # magnitude (the output layer is a Gemm), no convolutions left
    assert 26 <= r["graph_nodes"] < len(written) and r["graph_nodes_by_op"]["MatMul"] == 26
    assert "Conv" not in r["graph_nodes_by_op"]
    assert sum(r["graph_nodes_by_op"].values()) == r["graph_nodes"]


def test_compare_times_models_interleaved_as_ratios_to_the_first(models, tmp_path, capsys):
    """`--compare`: each model timed in the same rounds; a model with 12 extra MatMuls per call is
    slower than the plain one, the plain one against itself about even."""
    js = tmp_path / "c.json"
    assert main(["bench", "--model", str(models["conv"]), "--compare", str(models["slow"]), str(models["conv"]),
                 "--seconds", "1", "--block", "128", "--json", str(js)]) == 0
    rows = json.loads(js.read_text())["compare"]["128"]
    assert [r["model"] for r in rows] == [str(models["conv"]), str(models["slow"]), str(models["conv"])]
    assert rows[0]["ratio"] == 1.0 and rows[0]["graph_nodes"] < rows[1]["graph_nodes"]
    assert rows[1]["ratio"] > 1.3 * rows[2]["ratio"]
    assert 0.5 < rows[2]["ratio"] < 2.0
    assert "x1.00 of the first" in capsys.readouterr().err
    assert main(["bench", "--model", str(models["conv"]), "--compare", str(tmp_path / "none.onnx"),
                 "--seconds", "0.2", "--block", "128"]) == 2
