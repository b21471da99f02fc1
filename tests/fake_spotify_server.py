"""A small fake of the Spotify Web API on 127.0.0.1 for tests that drive the real spotipy client.

Serves: POST /api/token (client credentials, checks Basic auth), GET /v1/search (paged),
GET /v1/playlists/<id>/items (and /tracks), GET /previews/<id>.mp3. `fail_once` maps a path prefix to
a Retry-After value: the first request to it gets 429 with that header. Every request is logged as
(monotonic time, method, path, status).
"""
from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class FakeSpotify:
    def __init__(self, client_id: str, client_secret: str, tracks: dict, playlists: dict,
                 preview_bytes: bytes):
        self.client_id, self.client_secret = client_id, client_secret
        self.tracks = tracks  # id -> {"name", "artist", "genre", "preview": bool}
        self.playlists = playlists  # id -> [track ids]
        self.preview_bytes = preview_bytes
        self.fail_once: dict = {}
        self.log: list = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def track_json(self, tid: str) -> dict:
        t = self.tracks[tid]
        return {"id": tid, "name": t["name"], "duration_ms": 180000,
                "artists": [{"name": t["artist"], "id": "a" + tid}],
                "album": {"name": "Album " + t["artist"]},
                "external_urls": {"spotify": f"https://open.spotify.com/track/{tid}"},
                "preview_url": f"{self.base}/previews/{tid}.mp3" if t["preview"] else None}

    def search(self, q: str) -> list:
        q = q.lower()
        out = []
        for tid, t in self.tracks.items():
            if q.startswith("artist:"):
                ok = q.split(":", 1)[1].strip('"') == t["artist"].lower()
            elif q.startswith("genre:"):
                ok = q.split(":", 1)[1].strip('"') == t["genre"].lower()
            else:
                ok = q in t["name"].lower()
            if ok:
                out.append(tid)
        return out

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status, body=b"", ctype="application/json", headers=None):
                fake.log.append((time.monotonic(), self.command, self.path, status))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _json(self, obj, status=200):
                self._send(status, json.dumps(obj).encode())

            def _rate_limited(self) -> bool:
                for prefix, retry in list(fake.fail_once.items()):
                    if self.path.startswith(prefix):
                        del fake.fail_once[prefix]
                        self._send(429, b'{"error": {"status": 429, "message": "rate limit"}}',
                                   headers={"Retry-After": str(retry)})
                        return True
                return False

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = parse_qs(self.rfile.read(length).decode())
                expected = base64.b64encode(
                    f"{fake.client_id}:{fake.client_secret}".encode()).decode()
                if self.path != "/api/token":
                    return self._json({"error": "not found"}, 404)
                if self.headers.get("Authorization") != f"Basic {expected}":
                    return self._json({"error": "invalid_client"}, 401)
                if body.get("grant_type") != ["client_credentials"]:
                    return self._json({"error": "unsupported_grant_type"}, 400)
                self._json({"access_token": "fake-token", "token_type": "Bearer", "expires_in": 3600})

            def do_GET(self):
                url = urlparse(self.path)
                if url.path.startswith("/v1/") and self.headers.get("Authorization") != "Bearer fake-token":
                    return self._json({"error": {"status": 401, "message": "no token"}}, 401)
                if self._rate_limited():
                    return
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/v1/search":
                    ids = fake.search(query.get("q", ""))
                    limit, offset = int(query.get("limit", 10)), int(query.get("offset", 0))
                    page = ids[offset:offset + limit]
                    nxt = None
                    if offset + limit < len(ids):
                        nxt = f"{fake.base}/v1/search?q={query['q']}&type=track&limit={limit}&offset={offset + limit}"
                    return self._json({"tracks": {"items": [fake.track_json(t) for t in page],
                                                  "limit": limit, "offset": offset, "next": nxt,
                                                  "total": len(ids)}})
                parts = url.path.strip("/").split("/")
                if len(parts) == 4 and parts[:2] == ["v1", "playlists"] and parts[3] in ("items", "tracks"):
                    ids = fake.playlists.get(parts[2])
                    if ids is None:
                        return self._json({"error": {"status": 404, "message": "Not found."}}, 404)
                    limit, offset = int(query.get("limit", 2)), int(query.get("offset", 0))
                    limit = min(limit, 2)  # small pages: exercises paging
                    page = ids[offset:offset + limit]
                    nxt = (f"{fake.base}/v1/playlists/{parts[2]}/items?offset={offset + limit}&limit={limit}"
                           if offset + limit < len(ids) else None)
                    return self._json({"items": [{"track": fake.track_json(t)} for t in page]
                                       + [{"track": None}], "next": nxt, "total": len(ids)})
                if parts[0] == "previews" and len(parts) == 2:
                    tid = parts[1].rsplit(".", 1)[0]
                    if tid in fake.tracks and fake.tracks[tid]["preview"]:
                        return self._send(200, fake.preview_bytes, "audio/mpeg")
                return self._json({"error": {"status": 404, "message": "Not found."}}, 404)

        return Handler
