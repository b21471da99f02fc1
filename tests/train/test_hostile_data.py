"""Hostile input on the data side: a Spotify API that sends traversal ids, refuses credentials or is
unreachable; manifests, configs and arguments that are malformed. Each ends with one clear line (rc 2,
no traceback), writes nothing outside its folders and loses nothing."""
import json
import os
import subprocess
import sys

import pytest

from fake_spotify_server import FakeSpotify  # noqa: E402
from signals import broadband  # noqa: E402

from bandlift.rt.cli import main  # noqa: E402
from bandlift.train.data.sources import read_manifest  # noqa: E402

CLIENT_ID, SECRET = "test-client-id", "s3cr3t-never-logged"
ESCAPE = "../../../escaped"  # previews/ is DEST/spotify/previews: this names TMP/escaped.mp3


def mp3_bytes() -> bytes:
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, broadband(44100, 1.0), 44100, format="MP3", subtype="MPEG_LAYER_III")
    return buf.getvalue()


@pytest.fixture()
def spotify(monkeypatch, tmp_path):
    tracks = {"good1": {"name": "Rain", "artist": "A", "genre": "folk", "preview": True},
              ESCAPE: {"name": "Rain Escape", "artist": "B", "genre": "folk", "preview": True, "file": "good1"}}
    with FakeSpotify(CLIENT_ID, SECRET, tracks, {"PL": ["good1", ESCAPE]}, mp3_bytes()) as srv:
        monkeypatch.setenv("SPOTIPY_CLIENT_ID", CLIENT_ID)
        monkeypatch.setenv("SPOTIPY_CLIENT_SECRET", SECRET)
        monkeypatch.setenv("BANDLIFT_SPOTIFY_API", srv.base + "/v1/")
        monkeypatch.setenv("BANDLIFT_SPOTIFY_AUTH_URL", srv.base + "/api/token")
        monkeypatch.chdir(tmp_path)
        yield srv


def one_line_error(capsys, rc, expected_rc=2) -> str:
    err = capsys.readouterr().err
    assert rc == expected_rc, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def files_under(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.mark.parametrize("how", ["--query", "--playlist"])
def test_spotify_track_id_cannot_escape_dest_nor_enter_the_manifest(spotify, tmp_path, how, capsys):
    dest = tmp_path / "data"
    value = "rain" if how == "--query" else "PL"
    assert main(["dataset", "spotify", how, value, "--dest", str(dest), "--no-progress"]) == 0
    assert "1 refused (invalid track id)" in capsys.readouterr().out
    assert files_under(tmp_path) == files_under(dest.parent)  # nothing beside data/
    assert not (tmp_path / "escaped.mp3").exists()
    assert sorted(files_under(dest / "spotify" / "previews")) == ["good1.mp3"]
    assert [r["spotify_id"] for r in read_manifest(dest / "manifest.jsonl")] == ["good1"]


def test_spotify_state_file_with_a_traversal_id_is_ignored(spotify, tmp_path):
    dest = tmp_path / "data"
    state = dest / "spotify" / "state.json"
    state.parent.mkdir(parents=True)
    url = spotify.base + "/previews/good1.mp3"
    state.write_text(json.dumps({"tracks": {ESCAPE: {"spotify_id": ESCAPE, "preview_url": url, "status": "new",
                                                     "queries": []}}, "done_queries": []}))
    assert main(["dataset", "spotify", "--query", "nothing-matches", "--dest", str(dest), "--no-progress"]) == 0
    assert not (tmp_path / "escaped.mp3").exists()
    assert read_manifest(dest / "manifest.jsonl") == []


@pytest.mark.parametrize("case", ["bad secret", "auth unreachable", "api unreachable", "corrupt state"])
def test_spotify_auth_network_and_state_errors_are_one_line(spotify, tmp_path, monkeypatch, capsys, case):
    dest = tmp_path / "data"
    closed = "http://127.0.0.1:9"  # discard port: nothing listens
    if case == "bad secret":
        monkeypatch.setenv("SPOTIPY_CLIENT_SECRET", "wrong")
    elif case == "auth unreachable":
        monkeypatch.setenv("BANDLIFT_SPOTIFY_AUTH_URL", closed + "/api/token")
    elif case == "api unreachable":
        monkeypatch.setenv("BANDLIFT_SPOTIFY_API", closed + "/v1/")
        monkeypatch.setattr("bandlift.train.data.spotify.RETRIES", 0)
    else:
        (dest / "spotify").mkdir(parents=True)
        (dest / "spotify" / "state.json").write_text("{not json")
    line = one_line_error(capsys, main(["dataset", "spotify", "--query", "rain", "--dest", str(dest),
                                        "--no-progress"]))
    expected = {"bad secret": "refused the credentials", "auth unreachable": "cannot reach Spotify",
                "api unreachable": "cannot reach Spotify", "corrupt state": "unreadable collection state"}[case]
    assert expected in line and SECRET not in line and "wrong" not in line


# -- manifests ------------------------------------------------------------------------------------
GOOD_ROW = {"path": "/x.wav", "source": "s", "duration": 1.0, "bandwidth": 8000.0, "split": "train"}
BAD_ROWS = {
    "no source": ({k: v for k, v in GOOD_ROW.items() if k != "source"}, "lacks 'source'"),
    "no path": ({k: v for k, v in GOOD_ROW.items() if k != "path"}, "lacks 'path'"),
    "text duration": ({**GOOD_ROW, "duration": "long"}, "'duration' must be a number"),
    "nan bandwidth": ({**GOOD_ROW, "bandwidth": float("nan")}, "'bandwidth' out of range"),
    "negative duration": ({**GOOD_ROW, "duration": -1}, "'duration' out of range"),
    "bool rate": ({**GOOD_ROW, "sample_rate": True}, "'sample_rate' must be int"),
    "odd split": ({**GOOD_ROW, "split": "holdout"}, "'split' must be one of"),
    "a list": ([1, 2], "must be a JSON object"),
    "400-digit size": ({**GOOD_ROW, "size": 10**400}, "'size' out of range"),
    "number category": ({**GOOD_ROW, "category": 5}, "'category' must be str"),
    "huge rate": ({**GOOD_ROW, "sample_rate": 2**40}, "'sample_rate' out of range"),
}


def write_manifest_with(path, bad_line: str):
    path.write_text(json.dumps(GOOD_ROW) + "\n" + bad_line + "\n")
    return path


@pytest.mark.parametrize("case", [*BAD_ROWS, "not json", "too deep", "huge line"])
@pytest.mark.parametrize("command", ["info", "train"])
def test_bad_manifest_row_is_one_line_naming_it(tmp_path, capsys, case, command):
    if case in BAD_ROWS:
        line, expected = json.dumps(BAD_ROWS[case][0]), BAD_ROWS[case][1]
    else:
        line, expected = {"not json": ("{oops", "not a JSON line"), "too deep": ("[" * 100000, "nested too deep"),
                          "huge line": ('"' + "x" * (2 << 20) + '"', "longer than")}[case]
    manifest = write_manifest_with(tmp_path / "m.jsonl", line)
    before = manifest.read_bytes()
    argv = (["dataset", "info", "--manifest", str(manifest)] if command == "info" else
            ["train", "--manifest", str(manifest), "--run-dir", str(tmp_path / "run")])
    error = one_line_error(capsys, main(argv))
    assert f"{manifest}:2:" in error and expected in error
    assert manifest.read_bytes() == before and not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_reindexing_next_to_a_bad_manifest_keeps_it(tmp_path, capsys):
    import soundfile as sf

    (tmp_path / "music").mkdir()
    sf.write(tmp_path / "music" / "a.wav", broadband(44100, 0.5), 44100)
    manifest = write_manifest_with(tmp_path / "m.jsonl", json.dumps(BAD_ROWS["text duration"][0]))
    before = manifest.read_bytes()
    error = one_line_error(capsys, main(["dataset", "folder", str(tmp_path / "music"), "--manifest", str(manifest),
                                         "--no-progress", "--force"]))
    assert "'duration' must be a number" in error and manifest.read_bytes() == before


def test_an_evaluation_manifest_needs_only_paths(tmp_path):
    from bandlift.train.data.sources import DataError

    manifest = write_manifest_with(tmp_path / "m.jsonl", json.dumps({"path": "a.wav", "split": "test"}))
    assert [r["path"] for r in read_manifest(manifest)] == ["/x.wav", "a.wav"]
    with pytest.raises(DataError, match="lacks 'source'"):
        read_manifest(manifest, ("path", "source"))


def test_train_on_a_missing_manifest_creates_nothing(tmp_path, capsys):
    """Before: ClipDataset made <manifest folder>/cache/48000 (/cache/48000 for /nonexistent.jsonl) and the
    run folder, then a traceback."""
    manifest = tmp_path / "nowhere" / "m.jsonl"
    error = one_line_error(capsys, main(["train", "--manifest", str(manifest), "--run-dir", str(tmp_path / "run")]))
    assert "manifest not found" in error
    assert files_under(tmp_path) == []


def test_clip_dataset_checks_the_manifest_before_making_its_cache(tmp_path):
    from bandlift.train.data.dataset import ClipDataset
    from bandlift.train.data.sources import DataError

    with pytest.raises(DataError, match="manifest not found"):
        ClipDataset(tmp_path / "nowhere" / "m.jsonl")
    with pytest.raises(DataError, match="no usable"):
        ClipDataset(write_manifest_with(tmp_path / "m.jsonl", ""), split="valid")
    assert files_under(tmp_path) == ["m.jsonl"]
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF not audio")
    manifest = tmp_path / "junk.jsonl"
    manifest.write_text(json.dumps({**GOOD_ROW, "path": str(junk)}) + "\n")
    with pytest.raises(DataError, match="no readable 'train' files"):  # (a NameError before)
        ClipDataset(manifest, cache_dir=tmp_path / "cache", progress=False)


# -- training config and arguments ------------------------------------------------------------------
CONFIGS = {
    "bad yaml": ("data: [1, 2\ntrain: {steps: 3}\n", "not valid YAML at line"),
    "a list": ("- 1\n- 2\n", "must be a mapping of sections"),
    "section not a mapping": ("data: 5\n", "'data' must be a mapping"),
    "unknown key": ("train:\n  stepz: 5\n", "unknown key 'train.stepz'"),
    "text number": ("train:\n  lr: 2e-4\n", "'train.lr' must be a number"),
    "nan number": ("train:\n  lr: .nan\n", "'train.lr' must be like"),
    "binary": (b"\xff\xfe\x00garbage", "cannot read it"),
    "zero batch": ("data:\n  batch_size: 0\n", "'data.batch_size' must be in [1, 4096]"),
    "zero threads": ("train:\n  threads: 0\n", "'train.threads' must be in"),
    "tiny fft": ("loss:\n  ffts: [1]\n", "'loss.ffts' must be in"),
    "fft not numbers": ("loss:\n  ffts: ['a', null]\n", "'loss.ffts' must be an integer"),
    "no ffts": ("loss:\n  ffts: []\n", "'loss.ffts' must have 1..16 elements"),
    "manifest a number": ("data:\n  manifest: 5\n", "'data.manifest' must be a path"),
    "init a list": ("train:\n  init: [1, 2]\n", "'train.init' must be a path"),
    "400 digits": ("train:\n  steps: " + "9" * 400 + "\n", "'train.steps' must be in"),
    "fractional batch": ("data:\n  batch_size: 8.5\n", "'data.batch_size' must be an integer"),
    "one beta": ("train:\n  betas: [0.5]\n", "'train.betas' must have 2..2 elements"),
}


@pytest.mark.parametrize("case", [*CONFIGS, "missing", "a folder"])
def test_bad_training_config_is_one_line(tmp_path, capsys, case):
    config = tmp_path / "cfg.yaml"
    if case == "a folder":
        config.mkdir()
        expected = "cannot read it"
    elif case != "missing":
        text, expected = CONFIGS[case]
        config.write_bytes(text if isinstance(text, bytes) else text.encode())
    else:
        expected = "cannot read it"
    error = one_line_error(capsys, main(["train", "--config", str(config), "--manifest", str(tmp_path / "m.jsonl"),
                                         "--run-dir", str(tmp_path / "run")]))
    assert expected in error and not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, expected", [
    (["train", "--steps", "-1"], "--steps must be in"),
    (["train", "--steps", "-5"], "--steps must be in"),
    (["train", "--max-minutes", "nan"], "--max-minutes must be"),
    (["train", "--max-minutes", "-1"], "--max-minutes must be"),
    (["export", "x.pt", "-o", "x.onnx", "--tolerance", "nan"], "--tolerance must be"),
    (["dataset", "info", "--json", "x"], "no manifest rows"),
    (["dataset", "cache", "--rate", "0"], "--rate must be"),
    (["dataset", "cache", "--rate", "2147483648"], "--rate must be"),
    (["dataset", "cache", "--jobs", "100000"], "--jobs must be"),
    (["dataset", "folder", ".", "--jobs", "0"], "--jobs must be"),
    (["dataset", "folder", ".", "--jobs", "100000"], "--jobs must be"),
    (["dataset", "spotify", "--query", "x", "--limit", "100000000"], "--limit must be"),
    (["dataset", "spotify", "--query", "x", "--max-wait", "nan"], "--max-wait must be"),
])
def test_out_of_bounds_arguments_are_one_line(tmp_path, capsys, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BANDLIFT_DATA", str(tmp_path / "data"))
    if argv[0] == "train":
        argv = [*argv, "--run-dir", str(tmp_path / "run"), "--manifest", str(tmp_path / "m.jsonl")]
    error = one_line_error(capsys, main(argv))
    assert expected in error
    assert not (tmp_path / "run").exists() and not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("name", ["../../victim", "-oDir=/", "Upper"])
def test_debian_package_name_cannot_name_another_folder(tmp_path, capsys, name):
    """Before: `--packages ../../victim` found ../../victim_*.deb from dest/debs and emptied
    dest/debian/../../victim (rmtree of a half-unpacked tree) before dpkg failed."""
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "keep.txt").write_text("mine")
    (tmp_path / "victim_1.deb").write_bytes(b"not a deb")
    error = one_line_error(capsys, main(["dataset", "debian", f"--packages={name}", "--dest", str(tmp_path / "data"),
                                         "--no-progress"]))
    assert "not a Debian package name" in error
    assert (tmp_path / "victim" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("command", ["info", "train config", "train manifest"])
def test_a_fifo_as_manifest_or_config_does_not_hang(tmp_path, command):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    argv = {"info": ["dataset", "info", "--manifest", str(fifo)],
            "train config": ["train", "--config", str(fifo), "--run-dir", str(tmp_path / "run")],
            "train manifest": ["train", "--manifest", str(fifo), "--run-dir", str(tmp_path / "run")]}[command]
    try:
        proc = subprocess.run([sys.executable, "-m", "bandlift.rt.cli", *argv], capture_output=True, text=True,
                              timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{command} waits forever on a FIFO")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "not a regular file" in lines[0] or "manifest not found" in lines[0]


def test_an_oversized_preview_is_refused_not_buffered(spotify, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("bandlift.train.data.spotify.MAX_PREVIEW_BYTES", 1000)  # the fake's MP3 is ~10 kB
    dest = tmp_path / "data"
    summary = tmp_path / "s.json"
    assert main(["dataset", "spotify", "--query", "rain", "--dest", str(dest), "--no-progress",
                 "--json", str(summary)]) == 0
    counts = json.loads(summary.read_text())["spotify"]
    assert counts["failed"] == 1 and counts["downloaded"] == 0
    assert files_under(dest / "spotify" / "previews") == []


class PagingAPI:
    """A Spotify client stand-in whose playlist pages point wherever `next_url` says."""

    prefix = "http://api.test/v1/"

    def __init__(self, next_url):
        self.next_url, self.calls = next_url, 0

    def page(self):
        self.calls += 1
        return {"items": [{"track": {"id": f"t{self.calls}"}}], "next": self.next_url}

    def playlist_items(self, *args, **kwargs):
        return self.page()

    def next(self, page):
        return self.page()


@pytest.mark.parametrize("next_url, pages", [("http://elsewhere.test/v1/steal-the-token", 1),
                                             ("http://api.test/v1/playlists/PL/items?again", 3),
                                             (["not", "a", "url"], 1)])
def test_playlist_paging_stays_on_the_api_and_ends(monkeypatch, next_url, pages):
    from bandlift.train.data import spotify as data_spotify

    monkeypatch.setattr(data_spotify, "MAX_PAGES", 3)
    api = PagingAPI(next_url)
    tracks = [t["id"] for t in data_spotify._collect_query(api, "playlist", "PL", 100, None)]
    assert api.calls == pages and tracks == [f"t{i}" for i in range(1, pages + 1)]


@pytest.mark.parametrize("command", ["cache", "eval"])
def test_a_manifest_row_naming_a_fifo_does_not_hang(tmp_path, command):
    """Before: the decoder opened the FIFO and waited forever for a writer."""
    import soundfile as sf

    fifo, good = tmp_path / "pipe.wav", tmp_path / "good.wav"
    os.mkfifo(fifo)
    sf.write(str(good), broadband(48000, 1.0), 48000)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({**GOOD_ROW, "path": str(p), "split": "test"}) + "\n"
                                for p in (fifo, good)))
    argv = {"cache": ["dataset", "cache", "--manifest", str(manifest), "--no-progress"],
            "eval": ["eval", "--data", str(manifest), "--input-rate", "16000", "--no-model", "--baselines",
                     "sinc", "--no-visqol", "--quiet", "--json", str(tmp_path / "e.json")]}[command]
    try:
        proc = subprocess.run([sys.executable, "-m", "bandlift.rt.cli", *argv], capture_output=True, text=True,
                              timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{command} waits forever on a FIFO named in a manifest")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "not a regular file" in proc.stderr, proc.stderr


def test_eval_html_does_not_follow_planted_symlinks(tmp_path):
    """Before: index.html (and the excerpts) were opened by name, writing through a planted link."""
    import soundfile as sf

    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    html = tmp_path / "html"
    (html / "audio").mkdir(parents=True)
    (html / "index.html").symlink_to(victim)
    (html / "audio" / "000_reference.flac").symlink_to(victim)
    sf.write(str(tmp_path / "ref.wav"), broadband(48000, 1.0), 48000)
    assert main(["eval", "--quiet", "--no-visqol", "--data", str(tmp_path / "ref.wav"), "--input-rate", "16000",
                 "--no-model", "--baselines", "sinc", "--html", str(html)]) == 0
    assert victim.read_text() == "mine"
    assert not (html / "index.html").is_symlink() and "<html" in (html / "index.html").read_text()
    assert sf.info(str(html / "audio" / "000_reference.flac")).samplerate == 48000
    assert [p.name for p in html.rglob(".*")] == []


def test_writing_a_manifest_does_not_follow_a_planted_tmp_symlink(tmp_path, capsys):
    """Before: the manifest went to manifest.jsonl.tmp by name, through a planted link onto its target."""
    import soundfile as sf

    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    music, dest = tmp_path / "music", tmp_path / "data"
    music.mkdir()
    dest.mkdir()
    sf.write(str(music / "a.wav"), broadband(48000, 1.0), 48000)
    (dest / "manifest.jsonl.tmp").symlink_to(victim)
    assert main(["dataset", "folder", str(music), "--dest", str(dest), "--no-progress"]) == 0
    assert victim.read_text() == "mine"
    assert [r["path"] for r in read_manifest(dest / "manifest.jsonl")] == [str(music / "a.wav")]


def test_dataset_dest_that_is_a_file_is_one_line(tmp_path, capsys):
    import soundfile as sf

    (tmp_path / "music").mkdir()
    sf.write(str(tmp_path / "music" / "a.wav"), broadband(48000, 0.5), 48000)
    dest = tmp_path / "afile"
    dest.write_text("mine")
    error = one_line_error(capsys, main(["dataset", "folder", str(tmp_path / "music"), "--dest", str(dest),
                                         "--no-progress"]))
    assert "not a folder" in error and dest.read_text() == "mine"


def test_every_shipped_config_passes_the_schema():
    from pathlib import Path

    import bandlift.train
    from bandlift.train.cli.train import config_problems
    from bandlift.train.recipes import read_recipe
    from bandlift.train.trainer import DEFAULTS

    configs = sorted(Path(bandlift.train.__file__).parent.glob("*.yaml"))
    assert len(configs) >= 2
    for path in configs:  # each with its parents
        assert config_problems(read_recipe(path), DEFAULTS) == [], path


@pytest.mark.parametrize("content", [b"junk\n", b"", b"PK\x03\x04 not a zip"])
def test_exporting_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path, capsys, content):
    fake = tmp_path / "x.pt"
    fake.write_bytes(content)
    error = one_line_error(capsys, main(["export", str(fake), "-o", str(tmp_path / "x.onnx")]))
    assert "checkpoint" in error and files_under(tmp_path) == ["x.pt"]


def test_eval_prints_file_names_escaped(tmp_path, capsys):
    import soundfile as sf

    good, bad = tmp_path / "a\x1b]0;PWNED\x07.wav", tmp_path / "b\x1b[31m.wav"
    sf.write(str(good), broadband(48000, 1.0), 48000)
    bad.write_bytes(b"not audio")
    assert main(["eval", "--quiet", "--no-visqol", "--data", str(good), str(bad), "--input-rate", "16000",
                 "--no-model", "--baselines", "sinc"]) == 0
    captured = capsys.readouterr()
    assert "\x1b" not in captured.out + captured.err and "\\x1b" in captured.out and "\\x1b" in captured.err
