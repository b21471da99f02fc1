"""`bandlift eval` end to end on generated music-like references (baselines, and a tiny ONNX model)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

for _extra in ("librosa", "matplotlib", "visqol"):  # `bandlift eval` needs the eval extra
    pytest.importorskip(_extra, reason="needs the eval extra: pip install 'bandlift[eval]'")
from bandlift.rt.cli import main  # noqa: E402
from jack_server import build_model  # noqa: E402
from signals import music_like  # noqa: E402

FAST = "sinc,noise_fill"


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    d = tmp_path_factory.mktemp("refs")
    sf.write(d / "mono.wav", music_like(1.5, seed=1), 48000, subtype="FLOAT")
    sf.write(d / "stereo.flac", music_like(1.2, seed=2, channels=2), 48000)
    return d


def run_eval(tmp_path, *args, visqol=False):
    out = tmp_path / "eval.json"
    rc = main(["eval", "--quiet", "--json", str(out), *map(str, args), *([] if visqol else ["--no-visqol"])])
    return rc, (json.loads(out.read_text()) if rc == 0 else None)


def test_eval_all_baselines_end_to_end(refs, tmp_path, capsys):
    rc, res = run_eval(tmp_path, "--data", refs, "--input-rate", 16000, "--no-model", "--png", tmp_path / "png")
    assert rc == 0
    names = ["sinc", "spline", "noise_fill", "sbr", "griffin_lim"]
    assert res["config"]["methods"] == names
    assert [r["channels"] for r in res["files"]] == [1, 2]  # sorted: mono.wav, stereo.flac
    for record in res["files"]:
        assert set(record["metrics"]) == set(names)
        for m in record["metrics"].values():
            assert m.pop("visqol") is None  # --no-visqol
            assert set(m) == {"lsd", "lsd_hf", "snr", "si_sdr", "band_db", "peak_db"}
            assert all(np.isfinite(list(m.values())))
        assert record["metrics"]["noise_fill"]["lsd"] < record["metrics"]["sinc"]["lsd"]
        assert record["metrics"]["sinc"]["band_db"] < -20 < record["metrics"]["noise_fill"]["band_db"]
        assert record["metrics"]["sinc"]["peak_db"] == 0.0  # the peak is measured against sinc itself
        assert record["input_cutoff_hz"] == 8000
        png = tmp_path / "png" / record["png"].split("/")[-1]
        assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    summary = res["summary"]
    assert summary["files"] == 2 and res["skipped"] == []
    mean = summary["mean"]
    for n in names:  # the summary is the mean over files
        assert mean[n]["lsd"] == pytest.approx(np.mean([r["metrics"][n]["lsd"] for r in res["files"]]))
    assert mean["noise_fill"]["lsd"] < 0.6 * mean["sinc"]["lsd"]
    assert mean["noise_fill"]["lsd_hf"] < mean["sinc"]["lsd_hf"]
    assert summary["lsd_ratio"]["over_sinc"]["noise_fill"] == pytest.approx(
        mean["noise_fill"]["lsd"] / mean["sinc"]["lsd"])
    assert "model_over_sinc_lsd" not in summary
    table = capsys.readouterr().out
    assert "LSD/sinc" in table and all(n in table for n in names) and "stereo.flac" in table


def test_eval_with_model(refs, tmp_path):
    # A model that passes its input through: its output is the engine's resampled input, so it
    # must score like sinc (a misaligned output would lose SNR), and worse than noise_fill on LSD.
    model = build_model(tmp_path / "delay.onnx", "delay", delay=5)
    rc, res = run_eval(tmp_path, "--data", refs / "mono.wav", "--input-rate", 16000,
                       "--model", model, "--baselines", FAST)
    assert rc == 0
    assert res["config"]["methods"] == ["model", "sinc", "noise_fill"]
    mean = res["summary"]["mean"]
    assert 0.8 < res["summary"]["model_over_sinc_lsd"] < 1.2
    assert res["summary"]["model_over_noise_fill_lsd"] > 1.2
    assert abs(mean["model"]["snr"] - mean["sinc"]["snr"]) < 1.0


def test_same_rate_cutoff_and_auto(refs, tmp_path):
    rc, res = run_eval(tmp_path, "--data", refs, "--input-rate", 48000, "--input-cutoff", 8000,
                       "--no-model", "--baselines", FAST, "--max-files", 1)
    assert rc == 0 and len(res["files"]) == 1
    assert res["files"][0]["input_cutoff_hz"] == 8000
    assert res["summary"]["mean"]["noise_fill"]["lsd"] < 0.6 * res["summary"]["mean"]["sinc"]["lsd"]
    rc, res = run_eval(tmp_path, "--data", refs / "mono.wav", "--input-rate", 24000,
                       "--input-cutoff", "auto", "--no-model", "--baselines", "sinc")
    assert rc == 0
    assert 10000 < res["files"][0]["input_cutoff_hz"] <= 12000  # measured on the 24 kHz input


def test_bad_files_are_skipped_with_reasons(refs, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "garbage.wav").write_bytes(b"RIFF not really a wave file")
    sf.write(bad / "low_rate.wav", music_like(0.5, rate=44100), 44100)
    nan = music_like(0.5)
    nan[100] = np.nan
    sf.write(bad / "nan.wav", nan, 48000, subtype="FLOAT")
    rc, res = run_eval(tmp_path, "--data", refs / "mono.wav", bad, "--input-rate", 16000, "--no-model",
                       "--baselines", "sinc", "--seconds", 0.5, "--rate", 48000)
    assert rc == 0 and len(res["files"]) == 1 and res["files"][0]["seconds"] == 0.5
    reasons = {s["path"].split("/")[-1]: s["reason"] for s in res["skipped"]}
    assert "unreadable" in reasons["garbage.wav"]
    assert "44100 Hz is below the output rate 48000" in reasons["low_rate.wav"]
    assert "NaN" in reasons["nan.wav"]
    err = capsys.readouterr().err
    assert "skipping" in err and "garbage.wav" in err

    # Nothing usable: a clear error naming the files and why, exit status 2.
    rc = main(["eval", "--quiet", "--data", str(bad / "low_rate.wav"), "--input-rate", "16000", "--no-model",
               "--rate", "48000"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no usable reference" in err and "low_rate.wav" in err and "without --rate" in err


@pytest.mark.parametrize("args, message", [
    (["--input-rate", "48000"], "input cutoff in Hz"),
    (["--input-rate", "16000", "--input-cutoff", "9000"], "must be in (0, 8000]"),
    (["--input-rate", "16000", "--baselines", "sinc,magic"], "unknown baseline"),
    (["--input-rate", "16000", "--model", "/nonexistent/model.onnx"], "cannot use model"),
])
def test_usage_errors(refs, tmp_path, capsys, args, message):
    assert main(["eval", "--quiet", "--data", str(refs), "--no-model" if "--model" not in args else "--quiet",
                 *args]) == 2
    assert message in capsys.readouterr().err


def test_empty_folder_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["eval", "--data", str(tmp_path / "empty"), "--input-rate", "16000", "--no-model"]) == 2
    assert "no audio files" in capsys.readouterr().err


def test_manifest_split(refs, tmp_path, capsys):
    manifest = refs / "manifest.jsonl"
    manifest.write_text(json.dumps({"path": "mono.wav", "split": "test"}) + "\n\n"
                        + json.dumps({"path": str(refs / "stereo.flac"), "split": "train"}) + "\n")
    rc, res = run_eval(tmp_path, "--data", manifest, "--split", "test", "--input-rate", 16000,
                       "--no-model", "--baselines", "sinc")
    assert rc == 0 and [r["path"] for r in res["files"]] == [str(refs / "mono.wav")]
    rc, res = run_eval(tmp_path, "--data", manifest, "--input-rate", 16000, "--no-model", "--baselines", "sinc")
    assert rc == 0 and len(res["files"]) == 2
    manifest.unlink()
    assert main(["eval", "--data", str(refs), "--split", "test", "--input-rate", "16000", "--no-model"]) == 2
    assert "manifest" in capsys.readouterr().err


def test_a_silent_channel_is_left_out(tmp_path):
    import soundfile as sf

    from bandlift.train.eval.references import load_reference

    rng = np.random.default_rng(3)
    stereo = np.zeros((48000, 2))
    stereo[:, 0] = rng.standard_normal(48000) * 0.1
    sf.write(tmp_path / "half.wav", stereo, 48000, subtype="FLOAT")
    ref, _ = load_reference(tmp_path / "half.wav", 48000)
    assert ref.shape == (48000, 1) and np.allclose(ref[:, 0], stereo[:, 0])


def test_per_category_and_overall_with_visqol(tmp_path, capsys):
    """Means per category (from the manifest's rows; old rows without one go by their source) and
    overall; ViSQOL puts sinc below both oracles in each category; clips too short for ViSQOL are
    scored on the other metrics and counted apart."""
    rows = []
    for i, (category, source, seconds) in enumerate([
            ("speech", "folder:mine", 1.2), ("speech", "folder:mine", 1.3), ("speech", "folder:mine", 0.6),
            (None, "debian:wesnoth-1.16-music", 1.2), (None, "debian:wesnoth-1.16-music", 1.25)]):
        sf.write(tmp_path / f"{i}.wav", music_like(seconds, seed=10 + i), 48000)
        rows.append({"path": f"{i}.wav", "source": source, "split": "test"}
                    | ({"category": category} if category else {}))
    rows.append({"path": "0.wav", "source": "folder:mine", "split": "train", "category": "instruments"})
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc, res = run_eval(tmp_path, "--data", manifest, "--split", "test", "--input-rate", 16000, "--no-model",
                       "--baselines", "sinc", "--oracle", visqol=True)
    assert rc == 0
    assert res["config"]["methods"] == ["sinc", "oracle_noise", "oracle_envelope", "oracle_level", "oracle_shape",
                                         "oracle_file_shape"]
    assert [r["category"] for r in res["files"]] == ["speech"] * 3 + ["music"] * 2
    summary = res["summary"]
    assert list(summary["by_category"]) == ["speech", "music"]
    assert [(g["files"], g["visqol_files"]) for g in summary["by_category"].values()] == [(3, 2), (2, 2)]
    assert (summary["files"], summary["visqol_files"]) == (5, 4)
    assert res["files"][2]["metrics"]["sinc"]["visqol"] is None  # 0.6 s: too short for ViSQOL
    for category, group in summary["by_category"].items():
        files = [r for r in res["files"] if r["category"] == category]
        for name in res["config"]["methods"]:
            for key in ("lsd", "snr"):
                assert group["mean"][name][key] == pytest.approx(np.mean([r["metrics"][name][key] for r in files]))
            assert group["mean"][name]["visqol"] == pytest.approx(
                np.mean([r["metrics"][name]["visqol"] for r in files if r["seconds"] >= 1.0]))
        mean = group["mean"]
        for oracle in ("oracle_noise", "oracle_envelope"):
            assert mean["sinc"]["visqol"] + 1.0 < mean[oracle]["visqol"] <= 5
            assert mean[oracle]["lsd"] < mean["sinc"]["lsd"]
        assert 1 <= mean["sinc"]["visqol"]
    table = capsys.readouterr().out
    assert "speech: 3 file(s), ViSQOL on 2" in table and "music: 2 file(s)" in table
    assert "overall: 5 file(s)" in table
    assert "ViSQOL" in table.splitlines()[table.splitlines().index("Mean, music: 2 file(s)") + 1]


def test_references_are_judged_at_their_own_rate(tmp_path, capsys):
    """Without --rate: a 44.1 kHz reference is judged at 44.1 kHz, a 96 kHz one at 48 kHz; a reference
    with no band above the input is skipped with the reason. --rate still fixes one rate for all."""
    sf.write(tmp_path / "a44.wav", music_like(1.0, rate=44100, seed=1, channels=2), 44100)
    sf.write(tmp_path / "b96.wav", music_like(1.0, rate=96000, seed=2), 96000)
    sf.write(tmp_path / "c22.wav", music_like(1.0, rate=22050, seed=3), 22050)
    rc, res = run_eval(tmp_path, "--data", tmp_path, "--input-rate", 24000, "--no-model",
                       "--baselines", "sinc,noise_fill")
    assert rc == 0
    assert [(r["path"][-7:], r["file_rate"], r["rate"]) for r in res["files"]] == [
        ("a44.wav", 44100, 44100), ("b96.wav", 96000, 48000)]
    assert [s["path"][-7:] for s in res["skipped"]] == ["c22.wav"]
    assert "no band above a 24000 Hz input" in res["skipped"][0]["reason"]
    for record in res["files"]:
        assert record["metrics"]["noise_fill"]["lsd"] < record["metrics"]["sinc"]["lsd"]
    # A 44.1 kHz file with a 16 kHz wall: the 44.1 kHz input keeps its rate, the band above 16 kHz is missing.
    rc, res = run_eval(tmp_path, "--data", tmp_path / "a44.wav", "--input-rate", 44100, "--input-cutoff", 16000,
                       "--no-model", "--baselines", "sinc,noise_fill")
    assert rc == 0 and res["files"][0]["rate"] == 44100 and res["files"][0]["input_cutoff_hz"] == 16000
    assert res["summary"]["mean"]["noise_fill"]["lsd_hf"] < res["summary"]["mean"]["sinc"]["lsd_hf"]
    rc, res = run_eval(tmp_path, "--data", tmp_path, "--input-rate", 16000, "--rate", 48000, "--no-model",
                       "--baselines", "sinc", "--category", "instruments")
    assert rc == 0 and [r["rate"] for r in res["files"]] == [48000]  # b96 only
    assert list(res["summary"]["by_category"]) == ["instruments"]  # files outside a manifest: --category
    assert [s["path"][-7:] for s in res["skipped"]] == ["a44.wav", "c22.wav"]


def test_dataset_folder_category_reaches_the_eval(tmp_path):
    """`bandlift dataset folder --category` writes the category into the manifest rows; eval groups by it."""
    (tmp_path / "voices").mkdir()
    for i in range(2):
        sf.write(tmp_path / "voices" / f"{i}.wav", music_like(0.5, seed=20 + i), 48000)
    manifest = tmp_path / "manifest.jsonl"
    assert main(["dataset", "folder", str(tmp_path / "voices"), "--manifest", str(manifest),
                 "--category", "speech", "--no-progress"]) == 0
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    assert [r["category"] for r in rows] == ["speech", "speech"]
    rc, res = run_eval(tmp_path, "--data", manifest, "--input-rate", 16000, "--no-model", "--baselines", "sinc")
    assert rc == 0 and list(res["summary"]["by_category"]) == ["speech"]
    assert res["summary"]["by_category"]["speech"]["files"] == 2


def test_full_band_and_band_limited_references_are_also_summarised_apart(tmp_path, capsys):
    """A reference that stops well below Nyquist rewards an empty high band: with both kinds in one
    run, each gets its own means beside the categories."""
    from bandlift.train.degrade import band_limit

    sf.write(tmp_path / "full.wav", music_like(1.2, seed=3), 48000)
    sf.write(tmp_path / "limited.wav", band_limit(music_like(1.2, seed=4).astype(np.float64), 48000, 14000.0), 48000)
    rc, res = run_eval(tmp_path, "--data", tmp_path, "--input-rate", 16000, "--no-model", "--baselines", "sinc,noise_fill")
    assert rc == 0
    by_band = res["summary"]["by_reference_band"]
    assert [(kind, group["files"]) for kind, group in by_band.items()] == [("full band", 1), ("band-limited", 1)]
    for kind, name in (("full band", "full.wav"), ("band-limited", "limited.wav")):
        record = next(r for r in res["files"] if r["path"].endswith(name))
        assert by_band[kind]["mean"]["noise_fill"]["lsd"] == pytest.approx(record["metrics"]["noise_fill"]["lsd"])
    table = capsys.readouterr().out
    assert "Mean, band-limited references: 1 file(s)" in table
    assert "Mean, full band references (measured >= 90% of Nyquist): 1 file(s)" in table
    sf.write(tmp_path / "limited.wav", music_like(1.2, seed=4), 48000)  # both full band: no split
    rc, res = run_eval(tmp_path, "--data", tmp_path, "--input-rate", 16000, "--no-model", "--baselines", "sinc")
    assert rc == 0 and "by_reference_band" not in res["summary"]


def test_per_source_picks_the_first_files_of_each_source_that_visqol_can_score(tmp_path, capsys):
    """`--per-source N`: of the split's rows, the first N by path per source among those at least 1 s
    long, the same files whatever order the manifest lists them in."""
    rows = []
    for source, names in (("a", ["a3", "a1", "a0short", "a2"]), ("b", ["b2", "b1"])):
        for name in names:
            seconds = 0.5 if "short" in name else 1.0
            sf.write(tmp_path / f"{name}.wav", music_like(seconds, seed=len(rows)), 48000)
            rows.append({"path": f"{name}.wav", "source": source, "split": "test", "duration": seconds})
    rows.append({"path": "b0.wav", "source": "b", "split": "train", "duration": 1.0})  # another split
    sf.write(tmp_path / "b0.wav", music_like(1.0, seed=99), 48000)
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc, res = run_eval(tmp_path, "--data", manifest, "--split", "test", "--per-source", 2, "--input-rate", 16000,
                       "--no-model", "--baselines", "sinc")
    assert rc == 0
    assert sorted(Path(r["path"]).stem for r in res["files"]) == ["a1", "a2", "b1", "b2"]
    assert res["config"]["per_source"] == 2
    capsys.readouterr()
    assert run_eval(tmp_path, "--data", manifest, "--per-source", 0, "--input-rate", 16000, "--no-model")[0] == 2
    assert "--per-source must be at least 1" in capsys.readouterr().err
    assert run_eval(tmp_path, "--data", tmp_path / "a1.wav", "--per-source", 1, "--input-rate", 16000, "--no-model")[0] == 2
    assert "per source selects rows of a .jsonl manifest" in capsys.readouterr().err


def test_condition_makes_the_input_a_user_chain_delivers(refs, tmp_path, capsys):
    pytest.importorskip("av")
    rc, res = run_eval(tmp_path, "--data", refs, "--condition", "telephone", "--no-model", "--baselines", FAST)
    assert rc == 0 and res["config"]["condition"] == "telephone"
    for record in res["files"]:
        assert (record["input_rate"], record["input_cutoff_hz"], record["rate"]) == (8000, 3400.0, 48000)
        assert record["metrics"]["noise_fill"]["lsd"] < record["metrics"]["sinc"]["lsd"]
    rc, res = run_eval(tmp_path, "--data", refs, "--condition", "mp3-16k", "--no-model", "--baselines", FAST)
    assert rc == 0  # a same-rate wall: the input stays at the reference's rate
    assert all((r["input_rate"], r["input_cutoff_hz"]) == (48000, 16000.0) for r in res["files"])


@pytest.mark.parametrize("args, message", [
    (["--input-rate", "16000", "--condition", "telephone"], "either --input-rate HZ or --condition NAME"),
    ([], "either --input-rate HZ or --condition NAME"),
    (["--condition", "fax"], "unknown condition 'fax'"),
    (["--condition", "telephone", "--input-cutoff", "3000"], "sets the input's rate and band"),
    (["--input-rate", "16000", "--opus-bwe", "/nonexistent/bwe_demo"], "Opus BWE program not found"),
])
def test_condition_and_opus_usage_errors(refs, tmp_path, capsys, args, message):
    rc, _ = run_eval(tmp_path, "--data", refs, "--no-model", "--baselines", FAST, *args)
    assert rc == 2 and message in capsys.readouterr().err


OPUS_BWE = Path.home() / ".cache" / "opus-bwe" / "bwe_demo"  # ../shared/tools/build-opus-bwe.sh builds it


@pytest.mark.skipif(not OPUS_BWE.exists(), reason="Opus 1.6's bwe_demo is not built")
def test_opus_bwe_is_a_baseline_when_its_program_is_given(refs, tmp_path):
    rc, res = run_eval(tmp_path, "--data", refs, "--input-rate", 16000, "--no-model", "--baselines", FAST,
                       "--opus-bwe", OPUS_BWE)
    assert rc == 0 and res["config"]["methods"] == ["sinc", "noise_fill", "opus_bwe"]
    for record in res["files"]:
        scores = record["metrics"]
        assert scores["opus_bwe"]["lsd"] < scores["sinc"]["lsd"]  # it does fill the band
        assert scores["opus_bwe"]["snr"] > 3  # and it is aligned with the reference


def test_eval_prints_each_source_apart(tmp_path, capsys):
    first, second = tmp_path / "voices", tmp_path / "drums"
    for folder, seed in ((first, 1), (second, 2)):
        folder.mkdir()
        sf.write(folder / "a.wav", music_like(1.2, seed=seed), 48000)
    rc, res = run_eval(tmp_path, "--data", first, second, "--input-rate", 16000, "--no-model", "--baselines", FAST)
    assert rc == 0 and set(res["summary"]["by_source"]) == {str(first), str(second)}
    out = capsys.readouterr().out
    assert "LSD per source" in out and "voices" in out and "drums" in out


def test_a_missing_opus_bwe_program_is_one_line(refs, tmp_path, capsys):
    rc, _ = run_eval(tmp_path, "--data", refs, "--input-rate", 16000, "--no-model", "--baselines", FAST,
                     "--opus-bwe", tmp_path / "no-such-bwe_demo")
    err = capsys.readouterr().err
    assert rc == 2 and "Opus BWE program not found or not executable" in err and len(err.strip().splitlines()) == 1
