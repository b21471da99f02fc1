"""`bandlift dataset debian`: unpack (dpkg -x) and index, with a locally built .deb (no network)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from signals import broadband  # noqa: E402

from bandlift.rt.cli import main  # noqa: E402
from bandlift.train.data import debian as data_debian  # noqa: E402
from bandlift.train.data.sources import read_manifest  # noqa: E402

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")

COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Files: *
Copyright: 2020 Someone
License: CC0-1.0

Files: debian/*
License: GPL-2+
"""


def build_deb(tmp_path: Path, name: str) -> Path:
    root = tmp_path / "build" / name
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\n"
        "Description: test recordings\n")
    doc = root / "usr" / "share" / "doc" / name
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(COPYRIGHT)
    kits = root / "usr" / "share" / name / "kits"
    for kit in ("kitA", "kitB"):
        (kits / kit).mkdir(parents=True)
        for i in range(3):
            sf.write(kits / kit / f"hit{i}.flac", broadband(44100, 0.5, seed=i)[:, 0], 44100)
    sf.write(kits / "kitA" / "stamp_desc_fr.ogg", broadband(44100, 0.5), 44100)
    (kits / "kitB" / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    debs = tmp_path / "data" / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    deb = debs / f"{name}_1.0_all.deb"
    subprocess.run(["dpkg-deb", "-Zgzip", "--build", "--root-owner-group", str(root), str(deb)], check=True,
                   capture_output=True)
    return deb


@needs_dpkg
def test_debian_command_unpacks_and_indexes_local_deb(tmp_path, capsys):
    build_deb(tmp_path, "bandlift-test-sounds")
    dest = tmp_path / "data"
    assert main(["dataset", "debian", "--packages", "bandlift-test-sounds", "--dest", str(dest),
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "bad.wav" in err  # corrupt file reported, not fatal
    rows = read_manifest(dest / "manifest.jsonl")
    assert len(rows) == 7
    assert all(r["source"] == "debian:bandlift-test-sounds" for r in rows)
    assert all("CC0-1.0" in r["licence"] and "GPL-2+" in r["licence"] for r in rows)
    assert (dest / "debian" / "bandlift-test-sounds" / ".unpacked").exists()
    # running again reuses the unpacked tree and the unchanged rows
    assert main(["dataset", "debian", "--packages", "bandlift-test-sounds", "--dest", str(dest),
                 "--no-progress"]) == 0
    assert "unpacking" not in capsys.readouterr().err
    assert len(read_manifest(dest / "manifest.jsonl")) == 7


@needs_dpkg
def test_patterns_and_kit_groups(tmp_path, monkeypatch):
    build_deb(tmp_path, "bandlift-test-kits")
    monkeypatch.setitem(data_debian.PACKAGES, "bandlift-test-kits",
                        data_debian.Package("bandlift-test-kits", "kits", group_depth=1))
    root = data_debian.fetch_package("bandlift-test-kits", tmp_path / "data", log=lambda m: None)
    cands = data_debian.candidates("bandlift-test-kits", root)
    groups = {Path(c.path).parent.name: c.group for c in cands}
    assert groups == {"kitA": "debian:bandlift-test-kits:kitA", "kitB": "debian:bandlift-test-kits:kitB"}
    monkeypatch.setitem(data_debian.PACKAGES, "bandlift-test-kits",
                        data_debian.Package("bandlift-test-kits", "x", patterns=("*_desc_fr.ogg",)))
    assert [Path(c.path).name for c in data_debian.candidates("bandlift-test-kits", root)] == [
        "stamp_desc_fr.ogg"]
    # takes of one sound ("hit0", "hit1", ... -> "hit") share a split group across kits
    monkeypatch.setitem(data_debian.PACKAGES, "bandlift-test-kits",
                        data_debian.Package("bandlift-test-kits", "x", group_regex=r"^[a-z]+"))
    groups = {c.group for c in data_debian.candidates("bandlift-test-kits", root)}
    assert groups == {"debian:bandlift-test-kits:hit", "debian:bandlift-test-kits:stamp",
                      "debian:bandlift-test-kits:bad"}
    # one speaker per language: the regex is searched anywhere in the name ("stamp_desc_fr" -> "desc_fr")
    monkeypatch.setitem(data_debian.PACKAGES, "bandlift-test-kits",
                        data_debian.Package("bandlift-test-kits", "x", group_regex=r"desc_[a-z]+"))
    groups = {Path(c.path).name: c.group for c in data_debian.candidates("bandlift-test-kits", root)}
    assert groups["stamp_desc_fr.ogg"] == "debian:bandlift-test-kits:desc_fr"


def test_speakers_and_sample_families_never_span_two_splits():
    """The shipped groupings: a speaker (language) or a family of takes is one split group."""
    import re

    def group(package, name):
        return re.search(data_debian.PACKAGES[package].group_regex, name).group(0)

    assert group("tuxpaint-stamps-default", "frog_desc_fr.ogg") == group("tuxpaint-stamps-default", "cat_desc_fr.ogg")
    assert group("sonic-pi-samples", "tabla_ghe5.flac") == group("sonic-pi-samples", "tabla_ghe8.flac")
    assert group("sonic-pi-samples", "loop_perc1.flac") != group("sonic-pi-samples", "loop_amen.flac")
    assert data_debian.PACKAGES["klettres-data"].group_depth == 1  # "fr/alpha/a.ogg" -> "fr"


def test_tuxpaint_keeps_only_full_band_languages():
    pats = data_debian.PACKAGES["tuxpaint-stamps-default"].patterns
    import fnmatch
    keep = ["frog_desc_fr.ogg", "cat_desc_ru.ogg", "x_desc_da.ogg"]
    drop = ["frog_desc_de.ogg", "frog.ogg", "frog_desc_fr.png"]
    assert all(any(fnmatch.fnmatch(k, p) for p in pats) for k in keep)
    assert not any(any(fnmatch.fnmatch(d, p) for p in pats) for d in drop)


def test_game_packages_keep_their_voices_or_their_music(tmp_path):
    """hedgewars-data: only the voice packs, one group per pack; supertux-data and supertuxkart-data:
    the soundtrack (supertuxkart's tracks' music too), not the effects or speech."""
    import numpy as np

    def unpack(root, files):
        for rel in files:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(root / rel), np.zeros(441, np.float32), 44100)
        return root

    data = "usr/share/games/hedgewars/Data"
    hw = unpack(tmp_path / "hw", [f"{data}/Sounds/voices/Pirate/Amazing.ogg", f"{data}/Sounds/voices/Pirate/Boring.ogg",
                                  f"{data}/Sounds/voices/Default_ru/Amazing.ogg", f"{data}/Sounds/bazooka.ogg",
                                  f"{data}/Music/City.ogg"])
    groups = {Path(c.path).relative_to(hw / data).as_posix(): c.group for c in data_debian.candidates("hedgewars-data", hw)}
    assert groups == {"Sounds/voices/Pirate/Amazing.ogg": "debian:hedgewars-data:Sounds/voices/Pirate",
                      "Sounds/voices/Pirate/Boring.ogg": "debian:hedgewars-data:Sounds/voices/Pirate",
                      "Sounds/voices/Default_ru/Amazing.ogg": "debian:hedgewars-data:Sounds/voices/Default_ru"}
    data = "usr/share/games/supertux2"
    st = unpack(tmp_path / "st", [f"{data}/music/forest/theme.ogg", f"{data}/sounds/jump.wav", f"{data}/speech/tux_hello.ogg"])
    kept = [Path(c.path).relative_to(st / data).as_posix() for c in data_debian.candidates("supertux-data", st)]
    assert kept == ["music/forest/theme.ogg"]
    data = "usr/share/games/supertuxkart/data"
    stk = unpack(tmp_path / "stk", [f"{data}/music/celtic.ogg", f"{data}/tracks/cave/cave.ogg", f"{data}/sfx/horn.ogg"])
    kept = sorted(Path(c.path).relative_to(stk / data).as_posix() for c in data_debian.candidates("supertuxkart-data", stk))
    assert kept == ["music/celtic.ogg", "tracks/cave/cave.ogg"]


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get")
def test_unknown_package_is_a_clean_error(tmp_path, capsys):
    assert main(["dataset", "debian", "--packages", "bandlift-no-such-package-xyz", "--dest",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "apt-get download bandlift-no-such-package-xyz failed" in err
    assert not (tmp_path / "manifest.jsonl").exists()


def write_sf2(path: Path, samples: list) -> None:
    """A minimal SoundFont 2: samples = [(instrument, sample name, int16 array, rate)]."""
    import struct

    import numpy as np

    def chunk(cid, data):
        return cid + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1)

    pcm, shdr, inst, ibag, igen = b"", b"", b"", b"", b""
    instruments = list(dict.fromkeys(s[0] for s in samples))
    for k, name in enumerate(instruments):
        inst += struct.pack("<20sH", name.encode(), k)
        ids = [i for i, s in enumerate(samples) if s[0] == name]
        ibag += struct.pack("<HH", len(igen) // 4, 0)
        igen += b"".join(struct.pack("<HH", 53, i) for i in ids)
    inst += struct.pack("<20sH", b"EOI", len(instruments))
    ibag += struct.pack("<HH", len(igen) // 4, 0)
    igen += struct.pack("<HH", 0, 0)
    for _, name, data, rate in samples:
        start = len(pcm) // 2
        pcm += np.asarray(data, dtype="<i2").tobytes() + b"\0" * 92  # 46 zero samples after each
        shdr += struct.pack("<20sIIIIIBbHH", name.encode(), start, start + len(data), start,
                            start + len(data), rate, 60, 0, 0, 1)
    shdr += struct.pack("<20sIIIIIBbHH", b"EOS", 0, 0, 0, 0, 0, 0, 0, 0, 0)
    sdta = chunk(b"LIST", b"sdta" + chunk(b"smpl", pcm))
    pdta = chunk(b"LIST", b"pdta" + chunk(b"inst", inst) + chunk(b"ibag", ibag)
                 + chunk(b"igen", igen) + chunk(b"shdr", shdr))
    path.write_bytes(chunk(b"RIFF", b"sfbk" + chunk(b"LIST", b"INFO") + sdta + pdta))


def test_sf2_samples_are_extracted_grouped_and_excluded(tmp_path, monkeypatch):
    import numpy as np

    rng = np.random.default_rng(0)
    notes = {n: (rng.standard_normal(4000) * 3000).astype(np.int16) for n in ("C4", "D4", "S", "L")}
    font = tmp_path / "pkg" / "usr" / "share" / "sounds" / "sf2" / "Test Font.sf2"
    font.parent.mkdir(parents=True)
    write_sf2(font, [("Violins Fast_v1", "Vn C4(L)", notes["C4"], 44100),
                     ("Violins2 Pizz", "Vn D4", notes["D4"], 48000),
                     ("Sine Wave", "Sine", notes["S"], 44100),
                     ("Old Organ", "Lo-fi", notes["L"], 22050)])  # below min_rate: skipped
    out = tmp_path / "pkg" / "sf2-samples" / font.stem
    assert data_debian.extract_sf2(font, out) == 3
    names = sorted(p.name for p in out.iterdir())
    assert names == ["Sine Wave__0002 Sine.flac", "Violins Fast_v1__0000 Vn C4_L_.flac",
                     "Violins2 Pizz__0001 Vn D4.flac"]
    data, rate = sf.read(out / names[1], dtype="int16")
    assert rate == 44100 and np.array_equal(data, notes["C4"])
    monkeypatch.setitem(data_debian.PACKAGES, "bandlift-test-sf2", data_debian.Package(
        "bandlift-test-sf2", "x", extract="sf2", group_regex=r"^[A-Za-z]+|^[^_ ]+",
        exclude=("Sine Wave__*",)))
    cands = data_debian.candidates("bandlift-test-sf2", tmp_path / "pkg")
    assert {Path(c.path).name: c.group for c in cands} == {
        names[1]: "debian:bandlift-test-sf2:Violins", names[2]: "debian:bandlift-test-sf2:Violins"}
    with pytest.raises(data_debian.DebianError, match="not a SoundFont"):
        (tmp_path / "x.sf2").write_bytes(b"RIFF\4\0\0\0WAVE")
        data_debian.extract_sf2(tmp_path / "x.sf2", tmp_path / "x")


def test_min_rate_leaves_out_low_rates_and_8_bit(tmp_path, monkeypatch):
    sounds = tmp_path / "pkg" / "usr" / "share" / "sounds"
    sounds.mkdir(parents=True)
    x = broadband(44100, 0.2)[:, 0]
    sf.write(sounds / "hi.wav", x, 44100, subtype="PCM_16")
    sf.write(sounds / "lo.wav", x, 22050, subtype="PCM_16")
    sf.write(sounds / "u8.wav", x, 44100, subtype="PCM_U8")
    monkeypatch.setitem(data_debian.PACKAGES, "bandlift-test-rates",
                        data_debian.Package("bandlift-test-rates", "x", min_rate=44100))
    assert [Path(c.path).name for c in data_debian.candidates("bandlift-test-rates", tmp_path / "pkg")] == [
        "hi.wav"]


@needs_dpkg
def test_a_held_out_package_goes_whole_to_its_split(tmp_path, monkeypatch, capsys):
    """Validation and test hold out whole recording chains: every file of such a package lands in its
    split; other packages split by group unless they are the corpus's training packages."""
    build_deb(tmp_path, "bandlift-test-kits")
    dest = tmp_path / "data"
    monkeypatch.setitem(data_debian.PACKAGES, "bandlift-test-kits",
                        data_debian.Package("bandlift-test-kits", "kits", group_depth=1, split="test"))
    assert main(["dataset", "debian", "--packages", "bandlift-test-kits", "--dest", str(dest), "--no-progress"]) == 0
    rows = read_manifest(dest / "manifest.jsonl")
    assert len(rows) == 7 and {r["split"] for r in rows} == {"test"}
    monkeypatch.setitem(data_debian.PACKAGES, "bandlift-test-kits",
                        data_debian.Package("bandlift-test-kits", "kits", group_depth=1))
    assert main(["dataset", "debian", "--packages", "bandlift-test-kits", "--dest", str(dest), "--no-progress"]) == 0
    by_group = {}
    for row in read_manifest(dest / "manifest.jsonl"):
        by_group.setdefault(row["group"], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in by_group.values())  # by group: a kit is never in two splits
    held = {name: p.split for name, p in data_debian.PACKAGES.items() if p.split in ("valid", "test")}
    assert held == {"sonic-pi-samples": "test", "avldrums.lv2-soundfont": "test", "megaglest-data": "test",
                    "hydrogen-data": "valid", "ktuberling-data": "valid", "hedgewars-data": "valid",
                    "supertux-data": "valid"}
    for split in ("valid", "test"):  # each split holds out a source of speech and of instruments
        assert {"speech", "instruments"} <= {data_debian.PACKAGES[n].category for n, s in held.items() if s == split}
    assert "music" in {data_debian.PACKAGES[n].category for n, s in held.items() if s == "valid"}
