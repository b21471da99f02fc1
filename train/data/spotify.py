"""Track metadata and 30 s preview clips through spotipy (`bandlift dataset spotify`).

Credentials come only from SPOTIPY_CLIENT_ID / SPOTIPY_CLIENT_SECRET (client-credentials flow; the
token stays in memory, spotipy's debug logging, which prints auth headers, is silenced). Many tracks
have no `preview_url` (Spotify stopped returning them for most apps in late 2024): they are counted
and reported, never an error. Everything is cached under DEST/spotify/: `state.json` (tracks seen,
finished queries) and `previews/<track id>.mp3`, so an interrupted collection resumes where it
stopped. HTTP 429 is retried after the server's Retry-After (spotipy's urllib3 retry for the Web
API, our own loop for preview files).

Another API base (a local fake server in tests, a proxy): BANDLIFT_SPOTIFY_API (e.g.
http://127.0.0.1:8080/v1/) and BANDLIFT_SPOTIFY_AUTH_URL (the token endpoint).

Previews are lossy: their measured bandwidth (usually ~16 kHz or less) caps what they may teach.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
from pathlib import Path

from bandlift.rt.errors import BandliftError

LICENCE = ("Spotify 30 s preview, Spotify Developer Terms: personal/research use, do not "
           "redistribute")
SOURCE = "spotify"
PAGE = 50  # Spotify's maximum page size for search
TRACK_ID = re.compile(r"[A-Za-z0-9]{1,64}")  # Spotify ids are base62; anything else never names a file
RETRIES = 5  # spotipy's urllib3 retries (connection errors and 429/5xx), with backoff
MAX_LIMIT = 1000  # Spotify's search offset ends at 1000
MAX_PAGES = 1000  # per playlist: an API that pages forever is stopped
MAX_PREVIEW_BYTES = 20 << 20  # a 30 s preview is ~0.5 MB; a server sending more is refused, not buffered


class RateLimited(Exception):
    pass


class SpotifyError(BandliftError):
    """Spotify cannot be used: no credentials, refused ones, an API error, no network, a bad state file."""


def _client():
    import spotipy
    from spotipy.cache_handler import MemoryCacheHandler
    from spotipy.oauth2 import SpotifyClientCredentials

    client_id = os.environ.get("SPOTIPY_CLIENT_ID")
    client_secret = os.environ.get("SPOTIPY_CLIENT_SECRET")
    if not client_id or not client_secret:
        raise SpotifyError("set SPOTIPY_CLIENT_ID and SPOTIPY_CLIENT_SECRET in the environment "
                       "(https://developer.spotify.com/dashboard)")
    # spotipy logs request headers (the Basic auth of the client secret) at DEBUG: never let it.
    logging.getLogger("spotipy").setLevel(logging.WARNING)
    auth = SpotifyClientCredentials(client_id=client_id, client_secret=client_secret,
                                    cache_handler=MemoryCacheHandler())
    auth_url = os.environ.get("BANDLIFT_SPOTIFY_AUTH_URL")
    if auth_url:
        auth.OAUTH_TOKEN_URL = auth_url
    sp = spotipy.Spotify(auth_manager=auth, retries=RETRIES, status_retries=RETRIES, backoff_factor=0.5,
                         requests_timeout=20)
    api = os.environ.get("BANDLIFT_SPOTIFY_API")
    if api:
        sp.prefix = api if api.endswith("/") else api + "/"
    return sp


def _dict(value) -> dict:
    """`value` if the API sent an object there, else {} (a hostile or broken API sends anything)."""
    return value if isinstance(value, dict) else {}


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _text(value) -> str | None:
    return value if isinstance(value, str) else None


def valid_track_id(value) -> bool:
    return isinstance(value, str) and TRACK_ID.fullmatch(value) is not None


def _track_meta(track: dict) -> dict:
    artists = track.get("artists")
    url = _text(track.get("preview_url"))
    return {
        "spotify_id": track["id"],
        "name": _text(track.get("name")),
        "artists": [_text(_dict(a).get("name")) for a in _list(artists)],
        "album": _text(_dict(track.get("album")).get("name")),
        "duration_ms": track.get("duration_ms") if isinstance(track.get("duration_ms"), int) else None,
        "preview_url": url if url and url.startswith(("http://", "https://")) else None,
        "external_url": _text(_dict(track.get("external_urls")).get("spotify")),
    }


def _spotify_call(fn, *args, **kwargs):
    """fn's result as a dict ({} for anything else); API, auth and network failures as one line."""
    import requests
    from spotipy.exceptions import SpotifyException
    from spotipy.oauth2 import SpotifyOauthError

    try:
        return _dict(fn(*args, **kwargs))
    except SpotifyException as exc:
        if exc.http_status == 429:
            raise RateLimited("Spotify Web API rate limit persists after retries") from None
        detail = (str(exc.msg).strip().splitlines() or [""])[-1].strip()
        raise SpotifyError(f"Spotify API error {exc.http_status}: {detail}") from None
    except SpotifyOauthError as exc:
        raise SpotifyError(f"Spotify refused the credentials ({exc.error or 'no reason given'}); check "
                       "SPOTIPY_CLIENT_ID and SPOTIPY_CLIENT_SECRET") from None
    except requests.RequestException as exc:
        raise SpotifyError(f"cannot reach Spotify: {type(exc).__name__}") from None


def _collect_query(sp, kind: str, value: str, limit: int, market: str | None):
    """Yield track objects for one query spec."""
    if kind == "playlist":
        page = _spotify_call(sp.playlist_items, value, additional_types=("track",))
        for number in range(1, MAX_PAGES + 1):
            for item in _list(page.get("items")):
                track = _dict(_dict(item).get("track"))
                if track.get("id"):
                    yield track
            nxt = page.get("next")
            # the next page only from the API itself: the bearer token never goes anywhere else
            if number == MAX_PAGES or not (isinstance(nxt, str) and nxt.startswith(sp.prefix)):
                return
            page = _spotify_call(sp.next, page)
    q = {"query": value, "artist": f'artist:"{value}"', "genre": f'genre:"{value}"'}[kind]
    offset = 0
    while offset < limit:
        res = _spotify_call(sp.search, q=q, type="track", limit=min(PAGE, limit - offset),
                            offset=offset, market=market)
        tracks = _dict(res.get("tracks"))
        items = _list(tracks.get("items"))
        for track in map(_dict, items):
            if track.get("id"):
                yield track
        if not items or not tracks.get("next"):
            break
        offset += len(items)


class State:
    """tracks (id -> metadata + status) and finished query keys, saved atomically."""

    def __init__(self, path: Path):
        self.path = path
        try:
            data = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SpotifyError(f"{path}: unreadable collection state ({type(exc).__name__}); move it away to "
                           "start over") from None
        data = _dict(data)
        # only entries whose id can name a file inside previews/ (an edited state file is no way out)
        self.tracks: dict = {k: v for k, v in _dict(data.get("tracks")).items()
                             if valid_track_id(k) and isinstance(v, dict) and v.get("spotify_id") == k}
        for entry in self.tracks.values():
            entry["status"] = str(entry.get("status", "new"))
            entry["queries"] = [q for q in _list(entry.get("queries")) if isinstance(q, str)]
            entry["preview_url"] = _track_meta(entry | {"id": entry["spotify_id"]})["preview_url"]
        self.done: list = [q for q in _list(data.get("done_queries")) if isinstance(q, str)]

    def save(self):
        from bandlift.rt.io.files import replacing

        with replacing(self.path) as tmp:
            tmp.write_text(json.dumps({"tracks": self.tracks, "done_queries": self.done}, indent=1))


def preview_path(previews: Path, track_id: str) -> Path:
    """previews/<id>.mp3, checked to stay inside `previews` (ids come from a server)."""
    path = (previews / f"{track_id}.mp3").resolve()
    if not valid_track_id(track_id) or path.parent != previews.resolve():
        raise ValueError(f"refused track id {track_id!r}")
    return path


def _download(session, url: str, dest: Path, max_wait: float) -> None:
    """GET url into dest atomically, sitting out 429/503 Retry-After (up to max_wait each)."""
    for attempt in range(6):
        with session.get(url, timeout=30, stream=True) as resp:
            if resp.status_code in (429, 503):
                wait = _retry_after(resp.headers.get("Retry-After"), attempt)
                if wait > max_wait:
                    raise RateLimited(f"preview server asks to wait {wait:.0f} s")
                time.sleep(wait)
                continue
            resp.raise_for_status()
            content = resp.raw.read(MAX_PREVIEW_BYTES + 1, decode_content=True)
        if not content:
            raise ValueError("empty preview file")
        if len(content) > MAX_PREVIEW_BYTES:
            raise ValueError(f"preview larger than {MAX_PREVIEW_BYTES >> 20} MB")
        from bandlift.rt.io.files import replacing

        with replacing(dest) as tmp:
            tmp.write_bytes(content)
        return
    raise RateLimited("preview server keeps answering 429")


def _retry_after(value, attempt: int) -> float:
    try:
        wait = float(value)
    except (TypeError, ValueError):
        wait = math.nan
    return max(wait, 0.0) if math.isfinite(wait) else min(2.0 ** attempt, 60.0)


def collect(specs: list[tuple[str, str]], folder: Path, limit: int, market: str | None, max_wait: float,
            progress: bool = True) -> tuple[dict, list, str | None]:
    """Collect the tracks of `specs` ((kind, value): query, artist, genre or playlist) and their previews
    into `folder` (resuming its state.json): (counts, the downloaded previews as index Candidates, why
    it stopped early or None)."""
    import requests

    from bandlift.rt.cli.progress import progress_bar
    from bandlift.train.data.sources import Candidate

    previews = folder / "previews"
    previews.mkdir(parents=True, exist_ok=True)
    state = State(folder / "state.json")
    sp = _client()
    stopped = None
    invalid = 0
    try:
        for kind, value in specs:
            key = f"{kind}:{value}:{limit}:{market}"
            if key in state.done:
                print(f"{kind} {value!r}: already collected (cached)", file=sys.stderr)
                continue
            n = 0
            for track in _collect_query(sp, kind, value, limit, market):
                if not valid_track_id(track["id"]):
                    invalid += 1
                    continue
                entry = state.tracks.setdefault(track["id"], {"status": "new", "queries": []})
                entry.update(_track_meta(track))
                if key not in entry["queries"]:
                    entry["queries"].append(key)
                n += 1
            state.done.append(key)
            state.save()
            print(f"{kind} {value!r}: {n} tracks", file=sys.stderr)
        session = requests.Session()
        todo = [t for t in state.tracks.values()
                if t.get("preview_url") and not preview_path(previews, t["spotify_id"]).exists()]
        for t in progress_bar(todo, desc="previews", unit="file", disable=not progress):
            try:
                _download(session, t["preview_url"], preview_path(previews, t["spotify_id"]), max_wait)
                t["status"] = "downloaded"
            except RateLimited:
                raise
            except Exception as exc:  # noqa: BLE001 - one bad preview never stops the collection
                t["status"] = f"failed: {type(exc).__name__}"
            state.save()
    except RateLimited as exc:
        stopped = str(exc)
    finally:
        state.save()
    for t in state.tracks.values():
        if not t.get("preview_url"):
            t["status"] = "no preview"
        elif preview_path(previews, t["spotify_id"]).exists():
            t["status"] = "downloaded"
    state.save()
    counts = {"tracks": len(state.tracks),
              "no_preview": sum(t["status"] == "no preview" for t in state.tracks.values()),
              "downloaded": sum(t["status"] == "downloaded" for t in state.tracks.values()),
              "failed": sum(t["status"].startswith("failed") for t in state.tracks.values()),
              "invalid_ids": invalid}
    print(f"spotify: {counts['tracks']} tracks, {counts['downloaded']} previews downloaded, "
          f"{counts['no_preview']} without a preview, {counts['failed']} failed"
          + (f", {invalid} refused (invalid track id)" if invalid else ""))
    candidates = []
    for t in sorted(state.tracks.values(), key=lambda t: t["spotify_id"]):
        path = preview_path(previews, t["spotify_id"])
        if t["status"] == "downloaded":
            extra = {k: t.get(k) for k in ("spotify_id", "name", "artists", "album", "external_url")}
            extra["category"] = "music"
            candidates.append(Candidate(str(path), SOURCE, LICENCE, f"spotify:{t['spotify_id']}", extra))
    return counts, candidates, stopped
