"""`bandlift dataset spotify` with the real spotipy client against a fake Web API on loopback."""
import io
import json
import sys

import pytest
import soundfile as sf

from fake_spotify_server import FakeSpotify  # noqa: E402
from signals import broadband  # noqa: E402

from bandlift.rt.cli import main  # noqa: E402
from bandlift.train.data.sources import read_manifest  # noqa: E402

CLIENT_ID, SECRET = "test-client-id", "s3cr3t-never-logged"
TRACKS = {
    "t1": {"name": "Rain Song", "artist": "Alpha", "genre": "folk", "preview": True},
    "t2": {"name": "Rain Dance", "artist": "Beta", "genre": "folk", "preview": True},
    "t3": {"name": "Rainbow", "artist": "Alpha", "genre": "jazz", "preview": True},
    "t4": {"name": "Sunny", "artist": "Gamma", "genre": "jazz", "preview": True},
    "t5": {"name": "Rain Without Preview", "artist": "Delta", "genre": "folk", "preview": False},
}


def mp3_bytes() -> bytes:
    buf = io.BytesIO()
    try:
        sf.write(buf, broadband(44100, 3.0), 44100, format="MP3", subtype="MPEG_LAYER_III")
    except Exception as exc:  # pragma: no cover
        pytest.skip(f"libsndfile cannot write MP3: {exc}")
    return buf.getvalue()


@pytest.fixture()
def fake(monkeypatch, tmp_path):
    with FakeSpotify(CLIENT_ID, SECRET, dict(TRACKS), {"PL1": ["t3", "t4", "t1"]}, mp3_bytes()) as srv:
        monkeypatch.setenv("SPOTIPY_CLIENT_ID", CLIENT_ID)
        monkeypatch.setenv("SPOTIPY_CLIENT_SECRET", SECRET)
        monkeypatch.setenv("BANDLIFT_SPOTIFY_API", srv.base + "/v1/")
        monkeypatch.setenv("BANDLIFT_SPOTIFY_AUTH_URL", srv.base + "/api/token")
        monkeypatch.chdir(tmp_path)  # spotipy must not leave a token cache file here
        yield srv


def waited_after_429(log, prefix):
    """Seconds between the 429 on `prefix` and the next request to it."""
    hits = [(t, status) for t, method, path, status in log if path.startswith(prefix)]
    i = next(i for i, (_, status) in enumerate(hits) if status == 429)
    return hits[i + 1][0] - hits[i][0], hits[i + 1][1]


def test_collects_previews_counts_missing_honours_429_and_resumes(fake, tmp_path, capsys):
    fake.fail_once = {"/v1/search": 1, "/previews/t2": 1}
    dest = tmp_path / "data"
    args = ["dataset", "spotify", "--query", "rain", "--playlist", "spotify:playlist:PL1",
            "--limit", "4", "--dest", str(dest), "--no-progress", "--json", str(tmp_path / "s.json")]
    assert main(args) == 0
    out = capsys.readouterr()
    # search (limit 4) finds t1, t2, t3 "Rainbow", t5; the playlist adds t4
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["spotify"] == {"tracks": 5, "no_preview": 1, "downloaded": 4, "failed": 0,
                                  "invalid_ids": 0}
    assert "1 without a preview" in out.out
    rows = read_manifest(dest / "manifest.jsonl")
    assert sorted(r["spotify_id"] for r in rows) == ["t1", "t2", "t3", "t4"]
    for r in rows:
        assert r["source"] == "spotify" and r["codec"].startswith("MP3")
        assert 3000 < r["bandwidth"] < 21000  # lossy: measured, not assumed
        assert r["duration"] == pytest.approx(3.0, abs=0.2)
    # Retry-After honoured by spotipy (Web API) and by our downloader (previews)
    for prefix in ("/v1/search", "/previews/t2"):
        waited, status = waited_after_429(fake.log, prefix)
        assert waited >= 0.9 and status == 200
    # the secret never reaches the manifest, state, summary or output
    for text in [(dest / "manifest.jsonl").read_text(), (dest / "spotify" / "state.json").read_text(),
                 (tmp_path / "s.json").read_text(), out.out, out.err]:
        assert SECRET not in text
    assert not list(tmp_path.glob(".cache*"))
    # resume: nothing is fetched again
    n_before = len(fake.log)
    assert main(args) == 0
    again = [path for _, _, path, _ in fake.log[n_before:]]
    assert not any(p.startswith(("/v1/search", "/v1/playlists", "/previews")) for p in again)
    assert len(read_manifest(dest / "manifest.jsonl")) == 4


def test_long_retry_after_stops_and_resumes(fake, tmp_path, capsys):
    fake.fail_once = {"/previews/t4": 3600}
    dest = tmp_path / "data"
    args = ["dataset", "spotify", "--playlist", "PL1", "--dest", str(dest), "--no-progress",
            "--max-wait", "5"]
    assert main(args) == 3
    assert "run the same command again to resume" in capsys.readouterr().err
    state = json.loads((dest / "spotify" / "state.json").read_text())
    assert set(state["tracks"]) == {"t1", "t3", "t4"}
    assert main(args) == 0  # the 429 was one-off: resumes and completes
    assert sorted(r["spotify_id"] for r in read_manifest(dest / "manifest.jsonl")) == ["t1", "t3", "t4"]


def test_missing_credentials_and_bad_playlist(fake, tmp_path, monkeypatch, capsys):
    assert main(["dataset", "spotify", "--playlist", "NOPE", "--dest", str(tmp_path)]) == 2
    assert "Spotify API error 404" in capsys.readouterr().err
    monkeypatch.delenv("SPOTIPY_CLIENT_SECRET")
    assert main(["dataset", "spotify", "--query", "x", "--dest", str(tmp_path)]) == 2
    assert "SPOTIPY_CLIENT_SECRET" in capsys.readouterr().err
    assert main(["dataset", "spotify", "--dest", str(tmp_path)]) == 2
