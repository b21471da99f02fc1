"""Malformed ONNX models: metadata that asks for any state size, state shapes the graph does not
declare, outputs of the wrong type or shape, a missing output. Each is one ModelError at load, and one
clear line from `upsample`, `bench` and `live` (no traceback, no output file)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf

from bandlift.rt import Upsampler
from bandlift.rt.cli import main
from bandlift.rt.model import contract
from bandlift.rt.model.contract import ModelError, parse_info


def malformed_model(path, kind: str):
    """A pass-through model (audio_out = audio, state_out = state) broken in one way."""
    import onnx
    from onnx import TensorProto, helper

    f32 = TensorProto.FLOAT
    state_meta, state_dims, out_dims = [4], ["C", 4], ["C", "B"]
    nodes = [helper.make_node("Identity", ["state"], ["state_out"])]
    audio_out_type = f32
    if kind == "huge state":  # 4 TiB per channel asked for by the metadata alone
        state_meta = [1 << 20, 1 << 20]
    elif kind == "state shape differs from the graph":
        state_meta = [7]
    if kind == "float64 output":
        nodes.append(helper.make_node("Cast", ["audio"], ["audio_out"], to=TensorProto.DOUBLE))
        audio_out_type = TensorProto.DOUBLE
    elif kind in ("short output", "one frame only"):  # shapes left free in the graph
        end = [-1] if kind == "short output" else [64]  # one sample short, or right only for one frame
        for name, value in (("st", [0]), ("en", end), ("ax", [1])):
            nodes.append(helper.make_node("Constant", [], [name], value=helper.make_tensor(
                name, TensorProto.INT64, [1], value)))
        nodes.append(helper.make_node("Slice", ["audio", "st", "en", "ax"], ["audio_out"]))
        out_dims = ["C", "B1"]
    elif kind == "runaway loop":  # audio_out = audio passed through 1e15 iterations of Identity
        body = helper.make_graph(
            [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
            "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                     helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
                     helper.make_tensor_value_info("v_in", f32, None)],
            [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v_out", f32, None)])
        nodes += [helper.make_node("Constant", [], ["n"], value=helper.make_tensor("n", TensorProto.INT64, [], [10**15])),
                  helper.make_node("Constant", [], ["go"], value=helper.make_tensor("go", TensorProto.BOOL, [], [True])),
                  helper.make_node("Loop", ["n", "go", "audio"], ["audio_out"], body=body)]
    else:
        nodes.append(helper.make_node("Identity", ["audio"], ["audio_out"]))
    inputs = [helper.make_tensor_value_info("audio", f32, ["C", "B"]),
              helper.make_tensor_value_info("cutoff", f32, ["C"]),
              helper.make_tensor_value_info("state", f32, state_dims)]
    outputs = [helper.make_tensor_value_info("audio_out", audio_out_type, out_dims),
               helper.make_tensor_value_info("state_out", f32, state_dims)]
    if kind == "missing output":
        outputs = outputs[:1]
        nodes = nodes[1:]
    graph = helper.make_graph(nodes, kind.replace(" ", "_"), inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = contract.metadata(48000, 64, 0, [("s", state_meta)], "test")
    if kind == "contract 1":  # written before the contract had a version (one input per state)
        del meta[contract.CONTRACT]
    helper.set_model_props(model, meta)
    onnx.save(model, str(path))
    return path


KINDS = {"huge state": "more than", "state shape differs from the graph": "declared",
         "float64 output": r"is tensor\(double\)", "short output": r"the contract wants float32 \[1, 64\]",
         "missing output": "do not follow the contract",
         "contract 1": r"contract 1; this bandlift reads contract 2: re-export it with `bandlift export --from-onnx "}


def test_a_model_that_breaks_the_contract_only_on_longer_blocks(tmp_path, capsys):
    """One frame passes the load-time probe; a 128-sample block is a ModelError at run time, one line
    from upsample and bench."""
    model = str(malformed_model(tmp_path / "m.onnx", "one frame only"))
    wav = tmp_path / "in.wav"
    sf.write(wav, np.zeros(1600, np.float32), 16000)
    with pytest.raises(ModelError, match=r"broke the contract on a \[1, \d+\] block"):  # whole signals: large blocks
        Upsampler(model, provider="cpu").process(np.zeros(1600, np.float32), 16000)
    for argv in (["upsample", str(wav), str(tmp_path / "out.wav"), "--model", model],
                 ["bench", "--model", model, "--seconds", "0.1", "--block", "128"]):
        rc = main(argv)
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if "error" in line.lower()]
        assert rc == 2 and "Traceback" not in err and len(errors) == 1 and "broke the contract" in errors[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "m.onnx"]


@pytest.mark.timeout(60, method="thread")  # a hang in C: only the thread method ends it
def test_a_runaway_loop_in_the_graph_is_stopped_at_load(tmp_path, capsys, monkeypatch):
    """Before: the load-time probe ran the Loop's 1e15 iterations and `upsample` hung."""
    from bandlift.rt.model import session

    monkeypatch.setattr(session, "PROBE_SECONDS", 1.0, raising=False)
    model = str(malformed_model(tmp_path / "m.onnx", "runaway loop"))
    wav = tmp_path / "in.wav"
    sf.write(wav, np.zeros(1600, np.float32), 16000)
    rc = main(["upsample", str(wav), str(tmp_path / "out.wav"), "--model", model])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "runs for more than 1 s on one frame of silence" in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "m.onnx"]


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("in") / "in.wav"
    sf.write(path, (0.1 * np.sin(np.arange(1600) * 0.05)).astype(np.float32), 16000)
    return path


@pytest.mark.parametrize("kind", KINDS)
def test_malformed_model_is_one_model_error_at_load(tmp_path, kind):
    path = malformed_model(tmp_path / "m.onnx", kind)
    with pytest.raises(ModelError, match=KINDS[kind]):
        Upsampler(path)


@pytest.mark.parametrize("command", ["upsample", "bench", "live"])
@pytest.mark.parametrize("kind", ["huge state", "float64 output", "short output", "missing output", "contract 1"])
def test_malformed_model_is_one_line_from_every_command(tmp_path, wav, capsys, command, kind):
    model = str(malformed_model(tmp_path / "m.onnx", kind))
    out = tmp_path / "out.wav"
    argv = {"upsample": ["upsample", str(wav), str(out), "--model", model],
            "bench": ["bench", "--model", model, "--seconds", "0.1", "--block", "128"],
            "live": ["live", "--model", model, "--seconds", "0.1"]}[command]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith(f"bandlift {command}: error:")
    assert re.search(KINDS[kind], errors[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


GOOD = {contract.CONTRACT: "2", contract.SAMPLE_RATE: "48000", contract.FRAME: "64", contract.DELAY: "0",
        contract.STATE: json.dumps([{"name": "s", "shape": [4]}])}


@pytest.mark.parametrize("key, value, message", [
    (contract.SAMPLE_RATE, "2147483648", "bad metadata"),
    (contract.SAMPLE_RATE, "48000.5", "malformed"),
    (contract.FRAME, "0", "bad metadata"),
    (contract.FRAME, "1000000000", "bad metadata"),
    (contract.DELAY, "-1", "bad metadata"),
    (contract.DELAY, str(48000 * 3600), "bad metadata"),
    (contract.REACH, "-1", "bad metadata"),
    (contract.REACH, str(48000 * 3600), "bad metadata"),  # the engine would warm the model up for an hour
    (contract.REACH, "0.5", "malformed"),
    (contract.STATE, json.dumps([{"name": "s", "shape": [1.5]}]), "positive integers"),
    (contract.STATE, json.dumps([{"name": "s", "shape": [0]}]), "positive integers"),
    (contract.STATE, json.dumps([{"name": "s", "shape": [True]}]), "positive integers"),
    (contract.STATE, json.dumps([{"name": "s", "shape": [1 << 30]}]), "more than"),
    (contract.STATE, json.dumps({"name": "s"}), "list"),
    (contract.STATE, json.dumps([{"name": 3, "shape": [4]}]), "not"),
    (contract.STATE, "[" * 100000, "malformed"),
    (contract.LOWEST_CUTOFF, "100", "bad metadata"),
    (contract.LOWEST_CUTOFF, "nan", "bad metadata"),
    (contract.LOWEST_CUTOFF, "30000", "bad metadata"),
    (contract.LOWEST_CUTOFF, "low", "malformed"),
])
def test_metadata_out_of_bounds_is_a_model_error(key, value, message):
    meta = {**GOOD, key: value}
    with pytest.raises(ModelError, match=message):
        parse_info(meta, ["audio", "cutoff", "state"], ["audio_out", "state_out"], "m.onnx")
    info = parse_info(GOOD, ["audio", "cutoff", "state"], ["audio_out", "state_out"], "m.onnx")
    assert info.states == [("state", (4,))] and info.parts == [("s", (4,))] and info.reach is None
    assert parse_info({**GOOD, contract.REACH: "4190"}, ["audio", "cutoff", "state"], ["audio_out", "state_out"],
                      "m.onnx").reach == 4190
    assert info.lowest_cutoff_hz == contract.LEGACY_LOWEST_CUTOFF_HZ == 4000  # a model written before the key
    assert parse_info({**GOOD, contract.LOWEST_CUTOFF: "3400"}, ["audio", "cutoff", "state"],
                      ["audio_out", "state_out"]).lowest_cutoff_hz == 3400


@pytest.mark.parametrize("version", [None, "1", "3", "x" * 1000])
def test_another_contract_is_refused_naming_the_re_export(version):
    """Contract 1 (one input per state, no version key) or any other: one line naming the command."""
    meta = {**GOOD, contract.CONTRACT: version} if version else {k: v for k, v in GOOD.items() if k != contract.CONTRACT}
    with pytest.raises(ModelError) as error:
        parse_info(meta, ["audio", "cutoff", "s"], ["audio_out", "s_out"], "old.onnx")
    message = str(error.value)
    assert len(message.splitlines()) == 1 and len(message) < 250
    assert f"contract {(version or '1')[:20]}; this bandlift reads contract 2" in message
    assert "re-export it with `bandlift export --from-onnx old.onnx -o NEW.onnx`" in message
