"""Tags of MP3 outputs as an ID3v2.4 tag in UTF-8.

libsndfile writes an MP3's tags as ID3v1: 30 bytes a field, holding the UTF-8 it is given where ID3v1
means Latin-1, so a player reads 'Tïtle' as 'TÃ¯tle' (and a longer title is cut). bandlift writes MP3s
without libsndfile's tags and puts this tag in front of the audio instead (ID3v2.4, section 4.2).
"""
from __future__ import annotations

import os
import shutil

# soundfile's metadata names -> ID3v2.4 text frames
TEXT_FRAMES = {"title": "TIT2", "artist": "TPE1", "album": "TALB", "date": "TDRC", "tracknumber": "TRCK",
               "genre": "TCON", "copyright": "TCOP", "software": "TSSE", "comment": "COMM"}
UTF8 = b"\x03"


def _syncsafe(n: int) -> bytes:
    return bytes(((n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F))


def id3v2_tag(metadata: dict[str, str]) -> bytes:
    """An ID3v2.4 tag holding `metadata`'s known fields as UTF-8 frames; b"" when none has a value."""
    frames = b""
    for key, value in metadata.items():
        frame_id = TEXT_FRAMES.get(key)
        if frame_id is None or not value:
            continue
        text = value.encode("utf-8")
        # COMM: language ("XXX", unknown), an empty description, then the text
        body = UTF8 + (b"XXX\x00" + text if frame_id == "COMM" else text)
        frames += frame_id.encode("ascii") + _syncsafe(len(body)) + b"\x00\x00" + body
    return b"ID3\x04\x00\x00" + _syncsafe(len(frames)) + frames if frames else b""


def prepend_id3v2(path, metadata: dict[str, str]) -> None:
    """Put `metadata`'s ID3v2.4 tag in front of the MP3 at `path` (a file of ours, not yet in place)."""
    tag = id3v2_tag(metadata)
    if not tag:
        return
    tagged = f"{path}.id3"
    try:
        with open(tagged, "xb") as out, open(path, "rb") as audio:
            out.write(tag)
            shutil.copyfileobj(audio, out, 1 << 20)
        os.replace(tagged, path)
    finally:
        if os.path.exists(tagged):
            os.unlink(tagged)
