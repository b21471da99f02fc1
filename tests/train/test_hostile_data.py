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
from bandlift.train.data_sources import read_manifest  # noqa: E402

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
        monkeypatch.setattr("bandlift.train.data_spotify.RETRIES", 0)
    else:
        (dest / "spotify").mkdir(parents=True)
        (dest / "spotify" / "state.json").write_text("{not json")
    line = one_line_error(capsys, main(["dataset", "spotify", "--query", "rain", "--dest", str(dest),
                                        "--no-progress"]))
    expected = {"bad secret": "refused the credentials", "auth unreachable": "cannot reach Spotify",
                "api unreachable": "cannot reach Spotify", "corrupt state": "unreadable collection state"}[case]
    assert expected in line and SECRET not in line and "wrong" not in line
