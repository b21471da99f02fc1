"""Real recordings that install from Debian's archive: `apt-get download` + `dpkg -x` (no root).

Each package is unpacked under DEST/debian/<package>/ and its audio files indexed into the manifest
with source "debian:<package>" and the licence named in the package's copyright file.
"""
from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bandlift.train.data_sources import AUDIO_EXTENSIONS, Candidate


@dataclass(frozen=True)
class Package:
    name: str
    description: str
    patterns: tuple = ("*",)  # fnmatch on file names: which audio files to keep
    group_depth: int | None = None  # split by the folder this many levels under the audio root
    group_regex: str | None = None  # or by this regex's first match in the file name (takes of one sound)


PACKAGES = {
    p.name: p for p in [
        # Takes of one sample family ("tabla_ghe5", "tabla_ghe8"; "loop_perc1", "loop_perc2") stay together.
        Package("sonic-pi-samples", "Sonic Pi sample library (FLAC 44.1 kHz, ~6 min)",
                group_regex=r"^[a-z]+_[a-z]*"),
        # One speaker per language folder ("fr/alpha", "fr/syllab"): split by language.
        Package("klettres-data", "KLettres spoken letters and syllables (Vorbis 44.1 kHz)", group_depth=1),
        Package("wesnoth-1.16-music", "Battle for Wesnoth soundtrack (orchestral/folk, Vorbis)"),
        # One kit's samples share instruments and sessions: split by kit folder.
        Package("hydrogen-drumkits", "Hydrogen drum kits (WAV/FLAC/AIFF, partly 48 kHz/24-bit)",
                group_depth=1),
        Package("hydrogen-data", "Hydrogen's own kits: GMRockKit (recorded drums), TR-808 emulation "
                "(WAV/FLAC 44.1 kHz)", group_depth=1),
        # Takes of one chord come from one session: split by chord ("Csharp minor_UP_00" -> "Csharp minor").
        Package("hydrogen-drumkits-effects", "Hydrogen effect kit: acoustic guitar strums (FLAC 96 kHz)",
                group_regex=r"^[^_]+"),
        # Only the descriptions in these languages reach ~20 kHz; the others are band-limited. One
        # speaker per language: split by language ("..._desc_fr.ogg" -> "desc_fr").
        Package("tuxpaint-stamps-default", "Tux Paint stamp descriptions (spoken, Vorbis)",
                patterns=tuple(f"*_desc_{lang}.ogg" for lang in ("fr", "ru", "bg", "es", "be", "da")),
                group_regex=r"desc_[a-z]+"),
    ]
}
QUICK = ("sonic-pi-samples", "klettres-data")
DEFAULT = tuple(PACKAGES)


class DebianError(RuntimeError):
    pass


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def fetch_package(name: str, dest: Path, log=print) -> Path:
    """Download and unpack `name` under dest/debian/<name> (skipped when already unpacked)."""
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
    marker.write_text(deb.name + "\n")
    return root


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
    if not files:
        return []
    audio_root = Path(*_common_parts([f.parent for f in files]))
    out = []
    for f in files:
        rel = f.relative_to(audio_root)
        named = re.search(pkg.group_regex, f.name) if pkg.group_regex is not None else None
        if named:
            group = named.group(0).strip()
        elif pkg.group_depth is not None and len(rel.parts) > pkg.group_depth:
            group = "/".join(rel.parts[:pkg.group_depth])
        else:
            group = rel.as_posix()
        out.append(Candidate(str(f), f"debian:{name}", licence, f"debian:{name}:{group}",
                             {"package": name}))
    return out


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
