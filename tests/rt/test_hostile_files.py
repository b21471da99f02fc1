"""A corpus of bad and unusual audio files, made here, through `bandlift upsample` (one file and a folder).

Every run ends with rc 0 and a finite output of the right length, or with rc 2 (one file) and one
`error:` line: never a traceback, never a hang, never a file left under a temporary name, and an
existing output is left as it was when the run fails.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bandlift.rt.cli import main
from jack_server import build_model

RATE = 16000
SENTINEL = b"an existing output that a failed run must not touch"


def tone(n=3000, channels=1, rate=RATE):
    t = np.arange(n) / rate
    x = 0.4 * np.sin(2 * np.pi * min(440.0, rate / 5) * t)
    return np.stack([np.roll(x, 7 * c) for c in range(channels)], 1).astype(np.float32)


def wav_bytes(x=None, rate=RATE, subtype="PCM_16", fmt="WAV"):
    import io

    buf = io.BytesIO()
    sf.write(buf, tone() if x is None else x, rate, subtype=subtype, format=fmt)
    return buf.getvalue()


def with_sample(value):
    x = tone()
    x[100, 0] = value
    return wav_bytes(x, subtype="FLOAT")


def huge_list_chunk():
    raw = wav_bytes()
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + raw[12:36] + b"LIST"
            + struct.pack("<I", 0xFFFFFF00) + b"INFO" + raw[36:])


def huge_data_size():
    raw = bytearray(wav_bytes())
    raw[40:44] = struct.pack("<I", 0xFFFFFFF0)  # the data chunk claims 4 GiB; 6 kB follow
    return bytes(raw)


# name -> (file bytes, expected): "ok" = rc 0 with round(frames * 48000 / rate) frames, else the
# fragment of the one error line. Rates and widths are the file's own.
CORPUS = {
    "empty.wav": (b"", "cannot read"),
    "header-only.wav": (wav_bytes()[:44], "ok"),
    "truncated.wav": (wav_bytes()[:44 + 1000], "ok"),  # what is there is read: 500 frames
    "random.wav": (np.random.default_rng(0).bytes(4096), "cannot read"),
    "text.flac": (b"not audio at all\n" * 10, "cannot read"),
    "flac-named.wav": (wav_bytes(fmt="FLAC"), "ok"),
    "wav-named.mp3": (wav_bytes(), "ok"),
    "huge-data-size.wav": (huge_data_size(), "ok"),
    "huge-list-chunk.wav": (huge_list_chunk(), "cannot read"),
    "nan.wav": (with_sample(np.nan), "NaN/inf: first at sample 100"),
    "inf.wav": (with_sample(-np.inf), "NaN/inf: first at sample 100"),
    "1e30.wav": (with_sample(1e30), "ok"),
    **{f"width-{s}.wav": (wav_bytes(subtype=s), "ok") for s in ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT",
                                                                "DOUBLE")},
    **{f"width-{s}.flac": (wav_bytes(subtype=s, fmt="FLAC"), "ok") for s in ("PCM_S8", "PCM_24")},
    "width-PCM_S8.aiff": (wav_bytes(subtype="PCM_S8", fmt="AIFF"), "ok"),
    **{f"channels-{c}.wav": (wav_bytes(tone(channels=c)), "ok") for c in (2, 3, 8, 32, 65)},
    **{f"rate-{r}.wav": (wav_bytes(tone(max(2, min(r // 4, 3000)), rate=r), rate=r), "ok")
       for r in (1, 100, 7999, 22050, 44100)},
    "rate-96000.wav": (wav_bytes(tone(3000, rate=96000), rate=96000), "bandlift only upsamples"),
    "rate-384000.wav": (wav_bytes(tone(3000, rate=384000), rate=384000), "bandlift only upsamples"),
}
XFAIL = {}
CORPUS["truncated.flac"] = (wav_bytes(tone(8000), fmt="FLAC")[:3000], "read error")
CORPUS["float32-max.wav"] = (with_sample(np.finfo(np.float32).max), "beyond +-1e+36")  # refused, never inf


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(build_model(tmp_path_factory.mktemp("model") / "delay.onnx", "delay", delay=5))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    for name, (data, _) in CORPUS.items():
        (folder / name).write_bytes(data)
    return folder


def temp_leftovers(folder):
    return [p.name for p in folder.rglob(".*")]


def error_line(err: str) -> str:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, err
    return errors[0]


def check_output(src, dst, channels=None):
    info = sf.info(str(src))
    frames = len(sf.read(str(src), dtype="float32", always_2d=True)[0])  # what the file really holds
    y, rate = sf.read(str(dst), dtype="float32", always_2d=True)
    assert rate == 48000 and y.shape == (round(frames * 48000 / info.samplerate), channels or info.channels)
    assert np.isfinite(y).all()
    return y


def cases(names):
    return [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=XFAIL[n])) if n in XFAIL else n
            for n in names]


@pytest.mark.parametrize("name", cases(CORPUS))
def test_one_file_is_upsampled_or_refused_in_one_line(model, corpus, tmp_path, capsys, name):
    src, dst = corpus / name, tmp_path / "out.wav"
    dst.write_bytes(SENTINEL)
    rc = main(["upsample", str(src), str(dst), "--model", model, "--overwrite"])
    err = capsys.readouterr().err
    expected = CORPUS[name][1]
    if expected == "ok":
        assert rc == 0 and "Traceback" not in err, err
        check_output(src, dst)
    else:
        line = error_line(err)
        assert rc == 2 and line.startswith("bandlift upsample: error:") and expected in line, err
        assert dst.read_bytes() == SENTINEL
    assert temp_leftovers(tmp_path) == []


def test_every_integer_width_gives_the_same_signal(model, corpus, tmp_path):
    reference = None
    for name in sorted(n for n in CORPUS if n.startswith("width-")):
        dst = tmp_path / f"{name}.wav"
        assert main(["upsample", str(corpus / name), str(dst), "--model", model, "--input-cutoff", "nyquist",
                     "--subtype", "FLOAT"]) == 0  # the input's width is the question, not the output's
        y = check_output(corpus / name, dst)
        if reference is None:
            reference = y
        bits = {"U8": 8, "S8": 8, "16": 16}.get(name.split("_")[-1].split(".")[0], 24)
        assert np.abs(y - reference).max() < 4.0 / 2 ** bits, name  # the same tone, within quantisation


def test_a_directory_named_like_audio_and_a_missing_file_are_one_line(model, tmp_path, capsys):
    (tmp_path / "folder.wav").mkdir()
    for src in (tmp_path / "folder.wav", tmp_path / "missing.wav"):
        assert main(["upsample", str(src), str(tmp_path / "out.wav"), "--model", model]) == 2
        error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.wav"]


def test_a_fifo_does_not_hang(model, tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    try:
        proc = subprocess.run([sys.executable, "-m", "bandlift.rt.cli", "upsample", str(fifo),
                               str(tmp_path / "out.wav"), "--model", model], capture_output=True, text=True,
                              timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("upsample waits forever on a FIFO")
    assert proc.returncode == 2
    error_line(proc.stderr)


def run_folder(model, corpus, tmp_path, capsys, names):
    src = tmp_path / "in"
    src.mkdir()
    for name in names:
        (src / name).write_bytes((corpus / name).read_bytes())
    os.mkfifo(src / "pipe.wav")  # not a regular file: skipped, never opened
    (src / "dir.flac").mkdir()
    out, js = tmp_path / "out", tmp_path / "summary.json"
    rc = main(["upsample", str(src), "-o", str(out), "--model", model, "--json", str(js)])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    bad = [n for n in names if CORPUS[n][1] != "ok"]
    assert rc == (1 if bad else 0)
    results = {os.path.basename(r["input"]): r for r in json.loads(js.read_text())["files"]}
    assert sorted(results) == sorted(n for n in names if n.rsplit(".", 1)[1] in ("wav", "flac", "mp3", "aiff"))
    for name, r in results.items():
        if CORPUS[name][1] == "ok":
            check_output(src / name, out / name)  # each input's own container
        else:
            assert CORPUS[name][1] in r["error"]
            assert f"FAILED {r['error']}" in err
    assert f"{len(results) - len(bad)} of {len(results)} files upsampled" in err
    assert temp_leftovers(out) == []


def test_a_folder_of_bad_files_goes_on_and_reports_each(model, corpus, tmp_path, capsys):
    names = [n for n in CORPUS if n not in XFAIL and not n.startswith(("rate-1.", "channels-32", "channels-65"))]
    run_folder(model, corpus, tmp_path, capsys, names)


def test_a_truncated_flac_does_not_abort_the_folder(model, corpus, tmp_path, capsys):
    run_folder(model, corpus, tmp_path, capsys, ["width-PCM_16.wav", "truncated.flac", "width-PCM_24.wav"])


def in_small_tmpfs(tmp_path, size_kib: int, script: str, **env) -> subprocess.CompletedProcess:
    """Run `script` (sh) with $T a fresh tmpfs of `size_kib` (a private mount in a user namespace:
    no privileges needed) and $OUT a folder outside it, for what the script copies out."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    mnt, out = tmp_path / "mnt", tmp_path / "copied"
    mnt.mkdir()
    out.mkdir()
    full = f'mount -t tmpfs -o size={size_kib}k none "$T" || exit 99\n' + script
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", full],
                          env={**os.environ, **env, "T": str(mnt), "OUT": str(out), "PY": sys.executable},
                          capture_output=True, text=True, timeout=120)
    if proc.returncode == 99:
        pytest.skip(f"cannot mount a private tmpfs here: {proc.stderr.strip()}")
    return proc


OVERWRITE_LINKED = """
cp "$OUT/../old.wav" "$T/take.wav" && ln "$T/take.wav" "$T/bak.wav"
$PY -m bandlift.rt.cli upsample "$OUT/../long.wav" "$T/take.wav" --overwrite --input-cutoff nyquist \\
    --model "$MODEL" --subtype "$SUBTYPE" 2>"$OUT/err"
echo $? > "$OUT/rc"
cp "$T/take.wav" "$OUT/take.wav"; cp "$T/bak.wav" "$OUT/bak.wav"; ls -A "$T" > "$OUT/names"
stat -c %h "$T/take.wav" > "$OUT/links"
"""


@pytest.mark.parametrize("size_kib, subtype, fits", [(3584, "PCM_16", True), (2560, "PCM_16", False),
                                                    (6656, "DOUBLE", False)])
def test_overwrite_onto_a_hard_link_on_a_small_disk_keeps_the_old_content(model, tmp_path, size_kib, subtype,
                                                                          fits):
    """A 10 s output (0.96 MB as PCM_16, 3.84 MB as DOUBLE; 1.92 MB of float scratch) onto a
    hard-linked file: where the new file fits it replaces both names' content; where it does not (the
    scratch, the finished file or, for DOUBLE, the copy into place), the old content stays whole in both."""
    old = tone(16000)
    sf.write(str(tmp_path / "old.wav"), old, RATE, subtype="PCM_16")
    sf.write(str(tmp_path / "long.wav"), tone(160000), RATE, subtype="PCM_16")
    proc = in_small_tmpfs(tmp_path, size_kib, OVERWRITE_LINKED, MODEL=model, SUBTYPE=subtype)
    out = tmp_path / "copied"
    assert proc.returncode == 0, proc.stderr
    rc, err = int((out / "rc").read_text()), (out / "err").read_text()
    assert (out / "names").read_text().split() == ["bak.wav", "take.wav"]  # no hidden file left
    assert (out / "links").read_text().strip() == "2"
    assert (out / "take.wav").read_bytes() == (out / "bak.wav").read_bytes()
    if fits:
        assert rc == 0, err
        assert sf.info(str(out / "take.wav")).frames == 480000
    else:
        line = error_line(err)
        assert rc == 2 and ("No space left on device" in line or "cannot write" in line), err
        assert (out / "take.wav").read_bytes() == (tmp_path / "old.wav").read_bytes()


@pytest.mark.parametrize("where", ["file", "folder"])
def test_a_symlink_loop_as_output_is_one_line(model, corpus, tmp_path, capsys, where):
    (tmp_path / "a.wav").symlink_to(tmp_path / "b.wav")
    (tmp_path / "b.wav").symlink_to(tmp_path / "a.wav")
    src = corpus / "width-PCM_16.wav"
    if where == "folder":
        src = tmp_path / "in"
        src.mkdir()
        (src / "x.wav").write_bytes((corpus / "width-PCM_16.wav").read_bytes())
    argv = ["upsample", str(src), *(["-o"] if where == "folder" else []), str(tmp_path / "a.wav"), "--model", model,
            "--overwrite"]
    assert main(argv) == 2
    assert "symlink loop" in error_line(capsys.readouterr().err) or where == "folder"
    assert temp_leftovers(tmp_path) == []


def high_band_share(y: np.ndarray, rate: int, above_hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(y, axis=0)) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / rate)
    return float(spectrum[freqs > above_hz].sum() / spectrum.sum())


@pytest.mark.parametrize("channels", [1, 6])
def test_a_low_tone_is_not_read_as_the_band(tmp_path, capsys, channels):
    """Before: a 440 Hz tone at 48 kHz measured as a 516 Hz band; the shipped model filled 516 Hz-24 kHz
    with noise (about half the output's energy) and the file was turned down."""
    t = np.arange(2 * 48000) / 48000
    x = np.stack([0.4 * np.sin(2 * np.pi * (440 + 110 * c) * t) for c in range(channels)], 1).astype(np.float32)
    src, dst, js = tmp_path / "tone.wav", tmp_path / "out.wav", tmp_path / "s.json"
    sf.write(str(src), x, 48000, subtype="FLOAT")
    assert main(["upsample", str(src), str(dst), "--json", str(js), "--subtype", "FLOAT"]) == 0
    info = json.loads(js.read_text())["files"][0]
    assert info["input_cutoff_hz"] == 24000 and "Hz the model serves" in info.get("input_cutoff_note", "")
    assert info["gain_reduction_db"] == 0
    assert "note: the measured input band" in capsys.readouterr().out
    y, _ = sf.read(str(dst), dtype="float64", always_2d=True)
    assert high_band_share(y, 48000, 2000.0) < 1e-3


def test_a_telephone_band_edge_is_measured():
    """The detector reports a 3.4 kHz edge (telephone), whatever the model's lowest cutoff."""
    from bandlift.rt.dsp.bandwidth import effective_bandwidth
    from bandlift.train.degrade import band_limit

    noise = np.random.default_rng(0).standard_normal(16000 * 3) * 0.1
    assert 3200 <= effective_bandwidth(band_limit(noise, 16000, 3400.0), 16000) <= 3450


def strict_json(text: str):
    def refuse(name):
        raise ValueError(f"bare {name} is no JSON")
    return json.loads(text, parse_constant=refuse)


def test_json_into_a_missing_folder_and_a_silent_file_are_strict_json(model, tmp_path, capsys):
    """Before: --json into a missing folder was a traceback after the work was done, and a silent
    file's true peak was written as a bare -Infinity."""
    src = tmp_path / "silence.wav"
    sf.write(str(src), np.zeros((3000, 1), np.float32), RATE)
    js = tmp_path / "new" / "folder" / "s.json"
    assert main(["upsample", str(src), str(tmp_path / "out.wav"), "--model", model, "--json", str(js)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    info = strict_json(js.read_text())["files"][0]
    assert info["true_peak_dbtp"] is None and info["output_frames"] == 9000
    assert temp_leftovers(tmp_path) == []


def test_write_json_never_writes_bare_nan():
    from bandlift.rt.cli.errors import write_json

    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.json")
        write_json(path, {"rtf": float("nan"), "p99": [float("inf"), 1.5], "ok": {"n": 2}})
        assert strict_json(open(path).read()) == {"rtf": None, "p99": [None, 1.5], "ok": {"n": 2}}


def test_a_briefly_exploding_model_does_not_silence_the_file(tmp_path, capsys):
    """Before: offline, a model that explodes (x1000) for 0.1 s was kept, and the file's one gain
    (-60 dB) silenced the whole file. Now that stretch is bypassed and reported; the level stays."""
    model = str(build_model(tmp_path / "explode.onnx", "explode", fault_after=24000, fault_until=28800))
    x = 0.5 * np.sin(2 * np.pi * 300 * np.arange(3 * 48000) / 48000)
    src, dst, js = tmp_path / "in.wav", tmp_path / "out.wav", tmp_path / "s.json"
    sf.write(str(src), x.astype(np.float32), 48000, subtype="FLOAT")
    assert main(["upsample", str(src), str(dst), "--model", model, "--json", str(js), "--subtype", "FLOAT"]) == 0
    info = json.loads(js.read_text())["files"][0]
    assert info["gain_reduction_db"] == 0 and info["bypass_events"] >= 1  # it explodes again after each reset
    assert "model output exploded" in capsys.readouterr().out
    y, _ = sf.read(str(dst), dtype="float64")
    assert 0.45 < np.abs(y[-48000:]).max() < 0.55  # the end of the file at its own level


# -- signals and dead processes ---------------------------------------------------------------------
def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def wait_for(condition, seconds=120.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def start_folder_run(model, tmp_path, files=24, seconds=60, jobs=2):
    """`upsample DIR -o OUT --jobs N --json` started, returned once a hidden output exists (enough work,
    24 x 60 s at ~0.1 s each, that the run is still going when the test acts)."""
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for i in range(files):
        sf.write(str(folder / f"{i}.wav"), np.random.default_rng(i).uniform(-0.3, 0.3, RATE * seconds), RATE)
    proc = subprocess.Popen([sys.executable, "-m", "bandlift.rt.cli", "upsample", str(folder), "-o", str(out),
                             "--jobs", str(jobs), "--model", model, "--input-cutoff", "nyquist",
                             "--json", str(tmp_path / "s.json")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert wait_for(lambda: list(out.glob(".*"))), "no worker started writing"
    return proc, out


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_one_dead_worker_stops_the_folder_run_cleanly(model, tmp_path, sig):
    """Before: a BrokenProcessPool traceback, no summary, no JSON, and after SIGKILL the dead worker's
    hidden files stayed."""
    proc, out = start_folder_run(model, tmp_path)
    workers = children(proc.pid)
    assert len(workers) == 2
    os.kill(workers[0], sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert "a worker process died" in err and "of 24 files upsampled" in err
    results = json.loads((tmp_path / "s.json").read_text())["files"]
    assert len(results) == 24 and any("worker process died" in r.get("error", "") for r in results)
    assert wait_for(lambda: not [w for w in workers if alive(w)], 30)
    assert temp_leftovers(out) == []


def test_sighup_stops_a_folder_run_and_its_workers(model, tmp_path):
    """Before: the parent died on SIGHUP and both workers idled for ever (ppid 1)."""
    proc, out = start_folder_run(model, tmp_path)
    workers = children(proc.pid)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert wait_for(lambda: not [w for w in workers if alive(w)], 30)
    assert temp_leftovers(out) == []


def test_workers_die_with_a_killed_parent(model, tmp_path):
    proc, out = start_folder_run(model, tmp_path)
    workers = children(proc.pid)
    proc.kill()
    proc.communicate(timeout=30)
    assert wait_for(lambda: not [w for w in workers if alive(w)], 30), "workers outlived their parent"
    assert wait_for(lambda: temp_leftovers(out) == [], 10)


def test_sighup_to_a_single_file_run_leaves_no_scratch(model, tmp_path):
    src, dst = tmp_path / "long.wav", tmp_path / "o" / "out.wav"
    sf.write(str(src), np.random.default_rng(0).uniform(-0.3, 0.3, RATE * 600).astype(np.float32), RATE)
    proc = subprocess.Popen([sys.executable, "-m", "bandlift.rt.cli", "upsample", str(src), str(dst), "--model",
                             model, "--input-cutoff", "nyquist"], stderr=subprocess.PIPE, text=True)
    def writing():  # steady state: past the JIT's start-up (a signal inside it is a separate, known race)
        return dst.parent.exists() and any(p.stat().st_size > 1 << 20 for p in dst.parent.glob(".*.w64"))
    assert wait_for(writing)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert temp_leftovers(dst.parent) == [] and not dst.exists()


ESCAPE_NAME = "a\x1b]0;PWNED\x07b.wav"  # retitles a terminal when printed raw


def test_a_file_name_with_escape_sequences_is_printed_escaped(model, tmp_path, capsys):
    src = tmp_path / ESCAPE_NAME
    sf.write(str(src), tone(), RATE)
    assert main(["upsample", str(src), str(tmp_path / "out.wav"), "--model", model]) == 0
    captured = capsys.readouterr()
    assert "\x1b" not in captured.out + captured.err and "\x07" not in captured.out + captured.err
    assert "a\\x1b]0;PWNED\\x07b.wav" in captured.out
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / ESCAPE_NAME).write_bytes(b"not audio")
    assert main(["upsample", str(folder), "-o", str(tmp_path / "out"), "--model", model]) == 1
    captured = capsys.readouterr()
    assert "\x1b" not in captured.out + captured.err and "FAILED" in captured.err


@pytest.mark.parametrize("ext", [".opus", ".ogg", ".mp3"])
def test_a_lossy_output_decodes_below_its_ceiling(model, tmp_path, ext):
    """Before: the gain came from the float output's peak; the codec overshoots it (Opus decoded at
    -0.3 dBTP after the -1 dBTP gain). Now the decoded peak is measured."""
    from bandlift.rt.io.writer import LOSSY_CEILING_DBTP, decoded_true_peak

    x = np.clip(np.random.default_rng(0).standard_normal((48000 * 2, 1)) * 0.35, -1, 1).astype(np.float32)
    src, dst = tmp_path / "loud.wav", tmp_path / f"out{ext}"
    sf.write(str(src), x, 48000, subtype="FLOAT")
    assert main(["upsample", str(src), str(dst), "--model", model, "--input-cutoff", "nyquist"]) == 0
    assert 20 * np.log10(decoded_true_peak(dst, 1)) <= LOSSY_CEILING_DBTP + 1e-3
    assert temp_leftovers(tmp_path) == []


def test_a_band_below_the_models_lowest_cutoff_is_served_from_that_cutoff(tmp_path, capsys):
    """The model shipped until session 14 (tests/fixtures/speed_reference.onnx) learned 4-20 kHz bands;
    told a telephone band (3.4 kHz) it over-filled (+14 dB above the reference on held-out speech, peaks
    +2.6 dB): it now generates from its own lowest cutoff, exactly as if told 4 kHz, and says so."""
    from bandlift.rt import Upsampler
    from bandlift.train.degrade import band_limit

    rng = np.random.default_rng(0)
    x = band_limit(rng.standard_normal(8000 * 2) * 0.1, 8000, 3400.0).astype(np.float32)
    legacy = Path(__file__).parents[1] / "fixtures" / "speed_reference.onnx"
    up = Upsampler(legacy)
    assert up.session.info.lowest_cutoff_hz == 4000
    y34, _ = up.process(x, 8000, input_cutoff=3400)
    y40, _ = up.process(x, 8000, input_cutoff=4000)
    assert np.array_equal(y34, y40)
    src, dst, js = tmp_path / "phone.wav", tmp_path / "out.wav", tmp_path / "s.json"
    sf.write(str(src), x, 8000, subtype="FLOAT")
    assert main(["upsample", str(src), str(dst), "--input-cutoff", "3400", "--model", str(legacy), "--json",
                 str(js)]) == 0
    info = json.loads(js.read_text())["files"][0]
    assert info["input_cutoff_hz"] == 3400 and info["model_cutoff_hz"] == 4000
    assert "below the lowest the model was trained on (4000 Hz)" in info["input_cutoff_note"]
    assert "below the lowest the model was trained on" in capsys.readouterr().out


def test_mp3_tags_keep_their_characters(model, tmp_path):
    """Before: libsndfile wrote an MP3's tags as ID3v1, the UTF-8 bytes where players read Latin-1
    ('Tïtle' came back 'TÃ¯tle') and 30 bytes a field. Now an ID3v2.4 tag in UTF-8 carries them."""
    mutagen_mp3 = pytest.importorskip("mutagen.mp3")
    title, artist = "Tïtle ü — a name longer than ID3v1's thirty bytes", "Ärtist 東京"
    src, dst = tmp_path / "tagged.flac", tmp_path / "out.mp3"
    with sf.SoundFile(str(src), "w", RATE, 1, format="FLAC") as f:
        f.title, f.artist = title, artist
        f.write(tone(RATE))
    assert main(["upsample", str(src), str(dst), "--model", model]) == 0
    tags = mutagen_mp3.MP3(str(dst)).tags
    assert str(tags["TIT2"]) == title and str(tags["TPE1"]) == artist
    assert sf.info(str(dst)).frames == 48000  # the tag in front is not read as audio
    with sf.SoundFile(str(dst)) as f:
        assert f.title == title
    assert temp_leftovers(tmp_path) == []
