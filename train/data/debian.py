"""Real recordings that install from Debian's archive: `apt-get download` + `dpkg -x` (no root).

Each package is unpacked under DEST/debian/<package>/ and its audio files indexed into the manifest
with source "debian:<package>" and the licence named in the package's copyright file.
"""
from __future__ import annotations

import fnmatch
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bandlift.rt.errors import BandliftError
from bandlift.train.data.sources import AUDIO_EXTENSIONS, Candidate


@dataclass(frozen=True)
class Package:
    name: str
    description: str
    patterns: tuple = ("*",)  # fnmatch on file names: which audio files to keep
    group_depth: int | None = None  # split by the folder this many levels under the audio root
    group_regex: str | None = None  # or by this regex's first match in the file name (takes of one sound)
    exclude: tuple = ()  # fnmatch on the path under the audio root: files to leave out
    extract: str | None = None  # "sf2": write each SoundFont's samples out as FLAC (extract_sf2)
    min_rate: int = 0  # if set, leave out files below this rate and 8-bit PCM (a noise-filled top band)
    category: str = "other"  # what eval reports it under: "speech", "music" or "instruments"
    # where the package's files go: "train", "valid" or "test" whole (a recording chain held out), or
    # "groups": its groups split by hash (data.sources.assign_split), the default for other packages
    split: str = "groups"


PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")  # Debian policy 5.6.1
# Splits hold out whole sources: valid = ktuberling-data and hedgewars-data (speech), hydrogen-data
# (drums) and supertux-data (music); test =
# megaglest-data (speech), sonic-pi-samples and avldrums (instruments), recording chains training never
# sees; the other packages train whole. Wesnoth's music is split by track (the split's only music
# until session 13 added supertuxkart's, which trains whole).
PACKAGES = {
    p.name: p for p in [
        # Takes of one sample family ("tabla_ghe5", "tabla_ghe8"; "loop_perc1", "loop_perc2") stay together.
        Package("sonic-pi-samples", "Sonic Pi sample library (FLAC 44.1 kHz, ~6 min)",
                group_regex=r"^[a-z]+_[a-z]*", category="instruments", split="test"),
        # One speaker per language folder ("fr/alpha", "fr/syllab"): split by language.
        Package("klettres-data", "KLettres spoken letters and syllables (Vorbis 44.1 kHz)", group_depth=1,
                category="speech", split="train"),
        Package("wesnoth-1.16-music", "Battle for Wesnoth soundtrack (orchestral/folk, Vorbis)",
                category="music"),
        # One kit's samples share instruments and sessions: split by kit folder.
        Package("hydrogen-drumkits", "Hydrogen drum kits (WAV/FLAC/AIFF, partly 48 kHz/24-bit)",
                group_depth=1, category="instruments", split="train"),
        Package("hydrogen-data", "Hydrogen's own kits: GMRockKit (recorded drums), TR-808 emulation "
                "(WAV/FLAC 44.1 kHz)", group_depth=1, category="instruments", split="valid"),
        # Takes of one chord come from one session: split by chord ("Csharp minor_UP_00" -> "Csharp minor").
        Package("hydrogen-drumkits-effects", "Hydrogen effect kit: acoustic guitar strums (FLAC 96 kHz)",
                group_regex=r"^[^_]+", category="instruments", split="train"),
        # Only the descriptions in these languages reach ~20 kHz; the others are band-limited. One
        # speaker per language: split by language ("..._desc_fr.ogg" -> "desc_fr").
        Package("tuxpaint-stamps-default", "Tux Paint stamp descriptions (spoken, Vorbis)",
                patterns=tuple(f"*_desc_{lang}.ogg" for lang in ("fr", "ru", "bg", "es", "be", "da")),
                group_regex=r"desc_[a-z]+", category="speech", split="train"),
        # SoundFont samples at >= 44.1 kHz (extract_sf2): VSCO strings, Splendid grand piano, MuseScore
        # drumline, FluidR3 mono instruments; the synthesised instruments and those measured below
        # ~17 kHz (woodwinds, glockenspiel, ...) are left out. One group per instrument family
        # ("Violins2 Pizz_v1" -> "Violins", "Piano MF-low" -> "Piano").
        Package("musescore-general-soundfont-lossless", "MuseScore General SoundFont: sampled "
                "orchestral instruments, piano, drums (16-bit PCM, 44.1/48 kHz)", extract="sf2",
                group_regex=r"^[A-Za-z]+|^[^_ ]+",
                exclude=tuple(f"{name}__*" for name in (
                    "0 *", "808 Tom_GS", "Atmosphere", "Brightness_*", "Calliope Lead",
                    "Charang Layer 2", "Chiffer Lead", "Crystal_*", "DX7_2", "Electric Toms",
                    "Electronic Snares", "Feedback_GS", "Goblin", "Ice Rain_*", "Metal Pad",
                    "Metronome", "Sine Wave", "Space Voice", "Synth Bass 2", "Synth Drum",
                    "TR-808", "Whistle", "Clarinet", "Fretless Bass", "Glockenspiel", "English Horn",
                    "Oboe", "Sitar", "Harmonica", "Piccolo")), category="instruments", split="train"),
        # AVL drum kits (recorded acoustic drums). Black Pearl is hydrogen-drumkits' "The Black
        # Pearl 1.0" again, so only Red Zeppelin; one kit is one group.
        Package("avldrums.lv2-soundfont", "AVL Drumkits Red Zeppelin: recorded acoustic drums "
                "(SoundFont, 16-bit 44.1 kHz)", extract="sf2", group_depth=1,
                exclude=("Black_Pearl_4_LV2/*",), category="instruments", split="test"),
        # Unit voices and effects: only the 16-bit WAVs at >= 44.1 kHz reach ~20 kHz (the 22 kHz ones
        # stop at 11 kHz; 8-bit ones are noise up there); the tilesets' ambiences are duplicated
        # across tilesets. One group per faction (units of one faction share voice actors).
        Package("megaglest-data", "MegaGlest unit voices and effects (16-bit WAV, 44.1/48 kHz)",
                patterns=("*.wav",), min_rate=44100, group_depth=4, exclude=("tilesets/*", "data/*"),
                category="speech", split="test"),
        # Spoken object names, one speaker per language folder (the split group). Only these
        # languages' 44.1 kHz recordings reach ~19-20 kHz (median; p10 >= 17 kHz): the others are
        # 8/22 kHz, Opus at 12 kHz, or band-limited Vorbis.
        Package("ktuberling-data", "KTuberling spoken words, one speaker per language (Vorbis/WAV "
                "44.1 kHz)", min_rate=44100, group_depth=1,
                exclude=tuple(f"{lang}/*" for lang in ("ca", "da", "en", "es", "fi", "gl", "it", "nds",
                                                       "nl", "nn", "pt", "sr*", "sv")), category="speech",
                split="valid"),
        # Voice packs of a game's characters: 15 packs (English accents, Spanish, Polish, Russian,
        # Ukrainian; Vorbis 44.1 kHz, 16-21 kHz), one voice actor per pack; the package's music and
        # effects are left out (the package has one category). Validation's second speech source.
        Package("hedgewars-data", "Hedgewars character voices, 15 voice packs (Vorbis 44.1 kHz)",
                group_depth=3, exclude=("Music/*", "Sounds/[!v]*", "Missions/*", "Maps/*"),
                category="speech", split="valid"),
        # A game's soundtrack (51 tracks, 98 min, Vorbis 44.1 kHz, median 18.5 kHz); effects and speech
        # left out. Validation's music source, so that the best checkpoint is chosen on music it never met.
        Package("supertux-data", "SuperTux soundtrack (Vorbis 44.1 kHz)", exclude=("sounds/*", "speech/*"),
                category="music", split="valid"),
        # A puzzle game's spoken dialogues in Czech and Dutch, two fish and many side characters per
        # language (Vorbis, mostly 22.05 kHz: ~11 kHz wide, so they teach the narrowband inputs' bands,
        # telephone's and 8 kHz's, below their ceiling). One level per group.
        *(Package(f"fillets-ng-data-{lang}", f"Fish Fillets NG spoken dialogues, {name} (Vorbis 22/44 kHz)",
                  group_depth=1, category="speech", split="train") for lang, name in (("cs", "Czech"), ("nl", "Dutch"))),
        # A game's soundtrack by many composers (Vorbis 44.1/48 kHz, median 19 kHz); its effects are
        # left out. One track per group.
        Package("supertuxkart-data", "SuperTuxKart soundtrack, many composers (Vorbis 44.1/48 kHz)",
                exclude=("sfx/*",), category="music", split="train"),
    ]
}
QUICK = ("sonic-pi-samples", "klettres-data")
DEFAULT = tuple(PACKAGES)


class DebianError(BandliftError, RuntimeError):
    """A Debian package that cannot be fetched or unpacked."""


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def fetch_package(name: str, dest: Path, log=print) -> Path:
    """Download and unpack `name` under dest/debian/<name> (skipped when already unpacked)."""
    if not PACKAGE_NAME.fullmatch(name):  # names a folder that is emptied, and an apt-get argument
        raise DebianError(f"{name!r} is not a Debian package name (lower-case letters, digits, + - .)")
    root = dest / "debian" / name
    marker = root / ".unpacked"
    if marker.exists():
        return root
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise DebianError(f"`{tool}` not found: the debian source needs a Debian/Ubuntu system")
    debs = dest / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    existing = sorted(debs.glob(f"{name}_*.deb"))
    if not existing:
        log(f"downloading {name} (apt-get download)")
        res = _run(["apt-get", "download", name], cwd=debs)
        if res.returncode != 0:
            msg = (res.stderr or res.stdout).strip().splitlines()
            hint = (" (run `apt-get update` once, as root, if the package lists are missing)"
                    if any("Unable to locate" in line or "has no installation candidate" in line
                           for line in msg) else "")
            raise DebianError(f"apt-get download {name} failed: {' '.join(msg[-2:])}{hint}")
        existing = sorted(debs.glob(f"{name}_*.deb"))
        if not existing:
            raise DebianError(f"apt-get download {name} produced no .deb in {debs}")
    deb = existing[-1]
    log(f"unpacking {deb.name}")
    if root.exists():
        shutil.rmtree(root)  # a half-unpacked tree from an interrupted run
    root.mkdir(parents=True)
    res = _run(["dpkg", "-x", str(deb), str(root)], cwd=dest)
    if res.returncode != 0:
        raise DebianError(f"dpkg -x {deb.name} failed: {res.stderr.strip()}")
    pkg = PACKAGES.get(name)
    if pkg is not None and pkg.extract == "sf2":
        for font in sorted(f for f in root.rglob("*.sf2") if not f.is_symlink()):
            n = extract_sf2(font, root / "sf2-samples" / font.stem)
            log(f"extracted {n} samples of {font.name}")
    marker.write_text(deb.name + "\n")
    return root


def _riff_chunks(buf, off: int, end: int):
    while off + 8 <= end:
        cid, size = struct.unpack_from("<4sI", buf, off)
        yield bytes(cid), off + 8, size
        off += 8 + size + (size & 1)


def _safe_name(name: str) -> str:
    return re.sub(r"[^\w.+ -]", "_", name) or "_"


def extract_sf2(font: Path, out: Path, min_rate: int = 44100) -> int:
    """Write the 16-bit samples of a SoundFont 2 file recorded at >= min_rate as mono FLAC files
    named "<instrument>__<index> <sample>.flac" (under the first instrument that uses the sample), so
    a Package's group_regex on the instrument name keeps one session's notes in one split. Stereo
    pairs become two mono files (ClipDataset draws channels as mono views anyway). Returns the
    number of files written."""
    import numpy as np
    import soundfile as sf

    buf = memoryview(font.read_bytes())
    riff, size, form = struct.unpack_from("<4sI4s", buf, 0)
    if riff != b"RIFF" or form != b"sfbk":
        raise DebianError(f"{font} is not a SoundFont 2 file")
    parts = {}
    for cid, off, length in _riff_chunks(buf, 12, min(8 + size, len(buf))):
        if cid == b"LIST":
            for sub, soff, slen in _riff_chunks(buf, off + 4, off + length):
                parts[sub] = buf[soff:soff + slen]
    pcm = np.frombuffer(parts[b"smpl"], dtype="<i2")

    def records(key, fmt):
        n = struct.calcsize(fmt)
        return [struct.unpack_from(fmt, parts[key], i * n) for i in range(len(parts[key]) // n)]

    def text(raw):
        return raw.split(b"\0")[0].decode("latin-1").strip()

    insts, bags, gens = records(b"inst", "<20sH"), records(b"ibag", "<HH"), records(b"igen", "<HH")
    owner = {}
    for (name, bag), (_, next_bag) in zip(insts, insts[1:]):  # the last record is the terminator
        for (gen, _), (next_gen, _) in zip(bags[bag:next_bag], bags[bag + 1:next_bag + 1]):
            for oper, amount in gens[gen:next_gen]:
                if oper == 53:  # sampleID
                    owner.setdefault(amount, text(name))
    written = 0
    for i, (name, start, end, *_, rate, _, _, _, kind) in enumerate(records(b"shdr", "<20sIIIIIBbHH")[:-1]):
        if rate < min_rate or end <= start or kind & 0x8000 or i not in owner:  # ROM samples: no data
            continue
        out.mkdir(parents=True, exist_ok=True)
        sf.write(str(out / f"{_safe_name(owner[i])}__{i:04d} {_safe_name(text(name))}.flac"),
                 pcm[start:min(end, pcm.size)], rate, subtype="PCM_16")
        written += 1
    return written


def licence_note(root: Path, name: str) -> str:
    """The distinct `License:` names of the package's DEP-5 copyright file, and where it is."""
    copyright_file = root / "usr" / "share" / "doc" / name / "copyright"
    if not copyright_file.exists():
        return f"see the Debian package {name}"
    names = []
    for match in re.finditer(r"^License:\s*(\S.*)$", copyright_file.read_text(errors="replace"), re.M):
        value = match.group(1).strip()
        if value not in names:
            names.append(value)
    listed = ", ".join(names) if names else "see file"
    return f"{listed} (Debian package {name}, {copyright_file})"


def candidates(name: str, root: Path) -> list[Candidate]:
    """Audio files of an unpacked package, filtered by its patterns, with their split groups."""
    pkg = PACKAGES.get(name, Package(name, name))
    licence = licence_note(root, name)
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                   and any(fnmatch.fnmatch(p.name, pat) for pat in pkg.patterns))
    if pkg.min_rate:
        files = [f for f in files if _rate_and_depth_ok(f, pkg.min_rate)]
    if not files:
        return []
    audio_root = Path(*_common_parts([f.parent for f in files]))
    out = []
    for f in files:
        rel = f.relative_to(audio_root)
        if any(fnmatch.fnmatch(rel.as_posix(), pat) for pat in pkg.exclude):
            continue
        named = re.search(pkg.group_regex, f.name) if pkg.group_regex is not None else None
        if named:
            group = named.group(0).strip()
        elif pkg.group_depth is not None and len(rel.parts) > pkg.group_depth:
            group = "/".join(rel.parts[:pkg.group_depth])
        else:
            group = rel.as_posix()
        out.append(Candidate(str(f), f"debian:{name}", licence, f"debian:{name}:{group}",
                             {"package": name, "category": pkg.category,
                              **({} if pkg.split == "groups" else {"split": pkg.split})}))
    return out


def _rate_and_depth_ok(path: Path, min_rate: int) -> bool:
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception:  # noqa: BLE001 - left to the indexer, which reports unreadable files
        return True
    return info.samplerate >= min_rate and info.subtype not in ("PCM_U8", "PCM_S8")


def _common_parts(dirs: list[Path]) -> tuple:
    parts = dirs[0].parts
    for d in dirs[1:]:
        n = 0
        for a, b in zip(parts, d.parts):
            if a != b:
                break
            n += 1
        parts = parts[:n]
    return parts
