"""Manifest indexing of local folders, and ClipDataset (train/data/dataset.py)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy import signal

from signals import broadband  # noqa: E402

from bandlift.rt.dsp.bandwidth import effective_bandwidth  # noqa: E402
from bandlift.rt.cli import main  # noqa: E402
from bandlift.train.degrade import MIN_CUTOFF, band_limit  # noqa: E402
from bandlift.train.data.dataset import ClipDataset  # noqa: E402
from bandlift.train.data.sources import assign_split, is_lossy, read_manifest  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A folder with a full-band stereo FLAC, a lossy-like 48 kHz WAV walled at 12 kHz, a silent
    file, a corrupt file and a non-audio file, indexed with `bandlift dataset folder`."""
    root = tmp_path_factory.mktemp("corpus")
    music = root / "music" / "sub"
    music.mkdir(parents=True)
    sf.write(music / "full.flac", broadband(44100, 4.0, seed=1), 44100, subtype="PCM_16")
    walled = broadband(48000, 3.0, seed=2)
    walled = np.stack([band_limit(c, 48000, 12000.0) for c in walled.T], axis=1)
    sf.write(root / "music" / "walled.wav", walled[:, 0], 48000, subtype="FLOAT")
    sf.write(root / "music" / "silence.wav", np.zeros(48000), 48000)
    (root / "music" / "broken.flac").write_bytes(b"fLaC" + b"\x00garbage" * 100)
    (root / "music" / "notes.txt").write_text("not audio")
    manifest = root / "manifest.jsonl"
    rc = main(["dataset", "folder", str(root / "music"), "--manifest", str(manifest),
               "--no-progress", "--json", str(root / "summary.json")])
    assert rc == 0
    return root, manifest


def test_folder_manifest_rows(corpus, capsys):
    root, manifest = corpus
    rows = {Path(r["path"]).name: r for r in read_manifest(manifest)}
    assert set(rows) == {"full.flac", "walled.wav", "silence.wav"}  # broken one skipped
    summary = json.loads((root / "summary.json").read_text())
    assert [Path(s["path"]).name for s in summary["skipped_files"]] == ["broken.flac"]
    full, walled = rows["full.flac"], rows["walled.wav"]
    assert full["sample_rate"] == 44100 and full["channels"] == 2 and full["codec"] == "FLAC/PCM_16"
    assert full["duration"] == pytest.approx(4.0, abs=1e-3)
    assert full["bandwidth"] > 19500
    assert 11500 < walled["bandwidth"] < 12300
    assert rows["silence.wav"]["bandwidth"] == 0.0
    for r in rows.values():
        assert r["split"] in ("train", "valid", "test") and r["source"] == "folder:music"
        assert r["licence"]
    # three recordings: hashing puts all of them in train; a small set gets one per split instead
    assert [assign_split(r["group"]) for r in rows.values()].count("train") == 3
    assert sorted(r["split"] for r in rows.values()) == ["test", "train", "valid"]


def test_reindex_reuses_unchanged_rows_and_keeps_other_sources(corpus, tmp_path):
    root, manifest = corpus
    copy = tmp_path / "m.jsonl"
    copy.write_text(manifest.read_text() + json.dumps(
        {"path": "/x.wav", "source": "other", "duration": 1.0, "bandwidth": 1.0, "split": "train"}) + "\n")
    out = tmp_path / "s.json"
    assert main(["dataset", "folder", str(root / "music"), "--manifest", str(copy), "--no-progress",
                 "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["reused_rows"] == 3 and summary["decoded_files"] == 0
    sources = [r["source"] for r in read_manifest(copy)]
    assert sources.count("other") == 1 and sources.count("folder:music") == 3


def test_folder_errors_are_clean(tmp_path, capsys):
    assert main(["dataset", "folder", str(tmp_path / "missing"), "--manifest",
                 str(tmp_path / "m.jsonl")]) == 2
    assert "not a folder" in capsys.readouterr().err


def band_energy_above(x, sr, f_hz):
    f, p = signal.welch(x, sr, nperseg=2048)
    return p[f > f_hz].sum() / (p.sum() + 1e-30)


def test_clip_dataset_items(corpus):
    root, manifest = corpus
    ds = ClipDataset(manifest, split=None, seconds=0.5, rate=48000, seed=3, length=24,
                     cache_dir=root / "cache", progress=False)
    assert [Path(r["path"]).name for r in ds.rows] == ["full.flac", "walled.wav"]  # silence excluded
    assert len(ds.views) == 3  # stereo file = two mono views
    assert len(ds) == 24
    item = ds[5]
    assert set(item) >= {"target", "input", "cutoff"}
    assert item["target"].shape == (24000,) and item["input"].shape == (24000,)
    assert item["target"].dtype == torch.float32 and item["cutoff"].shape == ()
    again = ds[5]
    assert torch.equal(item["target"], again["target"]) and torch.equal(item["input"], again["input"])
    assert not torch.equal(ds[6]["target"], item["target"])
    ds.set_epoch(1)
    assert not torch.equal(ds[5]["target"], item["target"])
    ds.set_epoch(0)
    walled_seen = 0
    for i in range(len(ds)):
        it = ds[i]
        t, x, c, ceiling = (it["target"].numpy(), it["input"].numpy(), float(it["cutoff"]),
                            float(it["ceiling"]))
        assert MIN_CUTOFF - 1 <= c <= 0.9 * ceiling * 1.01
        assert np.sqrt(np.mean(t ** 2)) > 10 ** (-50 / 20)  # not a silent crop
        assert band_energy_above(x, 48000, c * 1.1) < 1e-3  # input lacks the band above cutoff
        if ceiling < 13000:  # the 12 kHz file: target stops at its ceiling, cutoff well below
            walled_seen += 1
            assert band_energy_above(t, 48000, 12500) < 1e-6
            assert c <= 0.9 * 12300
    assert walled_seen > 0
    # cached files are float32 .npy at 48 kHz, [channels, n]
    caches = sorted((root / "cache").glob("*.npy"))
    shapes = sorted(np.load(p, mmap_mode="r").shape for p in caches)
    assert shapes == [(1, 144000), (2, 192000)]


def test_clip_dataset_with_dataloader_workers_matches_direct_access(corpus):
    root, manifest = corpus
    ds = ClipDataset(manifest, split=None, seconds=0.25, seed=11, length=8, cache_dir=root / "cache",
                     progress=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    batches = list(loader)
    assert len(batches) == 2 and batches[0]["input"].shape == (4, 12000)
    direct = torch.stack([ds[i]["input"] for i in range(4, 8)])
    assert torch.equal(batches[1]["input"], direct)


def test_clip_dataset_measures_what_it_promises(corpus):
    """Inputs measured with effective_bandwidth sit at (or under) the reported cutoff; only the
    gentle Butterworth kind (5 %) leaves a slope that is measured higher (and the engine kind, 25 %,
    images up to 1.12 x), and even then the band beyond 1.3 x cutoff is empty."""
    root, manifest = corpus
    ds = ClipDataset(manifest, split=None, seconds=1.0, seed=5, length=20, cache_dir=root / "cache",
                     progress=False, noise_prob=0.0)
    within = 0
    for i in range(len(ds)):
        it = ds[i]
        x, c = it["input"].numpy(), float(it["cutoff"])
        within += effective_bandwidth(x, 48000) <= c * 1.15
        assert band_energy_above(x, 48000, 1.3 * c) < 1e-4
    assert within >= 17


def test_cache_command_prebuilds_what_clip_dataset_reads(corpus, tmp_path):
    root, manifest = corpus
    cache = tmp_path / "c"
    assert main(["dataset", "cache", "--manifest", str(manifest), "--cache-dir", str(cache),
                 "--jobs", "2", "--no-progress"]) == 0
    built = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.npy")}
    assert len(built) == 3  # silence is cached too; ClipDataset just does not pick it
    ds = ClipDataset(manifest, split=None, seconds=0.25, length=2, cache_dir=cache, progress=False)
    assert ds[0]["target"].shape == (12000,)
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*.npy")} == built


def test_source_balance_evens_out_sources(corpus, tmp_path):
    root, manifest = corpus
    rows = read_manifest(manifest)
    for row in rows:  # a small source (3 s mono) beside a big one (4 s stereo = two views)
        row["source"] = "small" if "walled" in row["path"] else "big"
    two = tmp_path / "two.jsonl"
    two.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kwargs = dict(split=None, seconds=0.25, seed=1, length=1, cache_dir=root / "cache", progress=False)

    def shares(ds):
        p = np.diff(np.concatenate([[0.0], ds.view_cdf]))
        sources = np.array([ds.rows[i]["source"] for i, _ in ds.views])
        return {s: p[sources == s].sum() for s in ("small", "big")}

    plain = shares(ClipDataset(two, **kwargs))
    balanced = shares(ClipDataset(two, source_balance=1.0, **kwargs))
    assert plain["small"] < 0.5 * plain["big"]
    assert abs(balanced["small"] - 0.5) < 1e-9 and abs(balanced["big"] - 0.5) < 1e-9


def test_fixed_validation_set_judges_the_first_files_of_each_source_as_eval_does(corpus, tmp_path):
    root, manifest = corpus
    rows = [r for r in read_manifest(manifest) if r["bandwidth"] > 1000]
    copies = []
    for source in ("a", "b"):  # two sources of three files each (the same audio under other names)
        for i, row in enumerate(rows[:1] * 3):
            copies.append({**row, "source": source, "path": row["path"], "split": "valid", "copy": f"{source}{i}"})
    for i, row in enumerate(copies):  # distinct paths, sorted within a source by their index
        row["path"] = str(Path(row["path"]).with_name(f"{row['copy']}.flac"))
        Path(row["path"]).write_bytes(Path(rows[0]["path"]).read_bytes())
    path = tmp_path / "fixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in copies))
    kwargs = dict(seconds=0.5, cache_dir=tmp_path / "cache", progress=False, fixed_cutoff_hz=8000.0, per_source=2)
    ds = ClipDataset(path, "valid", length=32, **kwargs)
    assert [Path(r["path"]).stem for r in ds.rows] == ["a0", "b0", "a1", "b1"]  # interleaved: a cap stays balanced
    assert len(ds) == 4 and [Path(r["path"]).stem for r in ClipDataset(path, "valid", length=2, **kwargs).rows[:2]] == ["a0", "b0"]
    first = ds[0]
    ds.set_epoch(5)
    again = ClipDataset(path, "valid", length=32, seed=99, **kwargs)[0]
    assert float(first["cutoff"]) == 8000.0 and torch.equal(first["input"], ds[0]["input"])  # no epoch, no seed
    assert torch.equal(first["input"], again["input"]) and torch.equal(first["target"], again["target"])
    assert band_energy_above(first["input"].numpy(), 48000, 8500) < 1e-6  # the input stops at the cutoff
    assert band_energy_above(first["target"].numpy(), 48000, 8500) > 1e-4  # the reference does not
    assert float(first["target"].abs().max()) > 0.01  # the file's start, at its own level (no gain drawn)


def test_fixed_set_skips_short_files_and_judges_each_at_its_own_length(tmp_path):
    """The perceptual set leaves out files too short for ViSQOL and does not pad a shorter file with
    silence (both would score well whatever the model does)."""
    folder = tmp_path / "lengths"
    folder.mkdir()
    for i, seconds in enumerate((0.5, 1.5, 4.0)):
        sf.write(folder / f"f{i}.wav", broadband(48000, seconds, seed=i)[:, 0], 48000)
    manifest = tmp_path / "manifest.jsonl"
    assert main(["dataset", "folder", str(folder), "--manifest", str(manifest), "--no-progress"]) == 0
    rows = [{**r, "split": "valid"} for r in read_manifest(manifest)]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kwargs = dict(seconds=3.0, length=32, cache_dir=tmp_path / "cache", progress=False, fixed_cutoff_hz=8000.0,
                  per_source=4)
    ds = ClipDataset(manifest, "valid", min_seconds=1.0, **kwargs)
    assert sorted(Path(r["path"]).stem for r in ds.rows) == ["f1", "f2"]
    lengths = {Path(r["path"]).stem: len(ds[i]["target"]) for i, r in enumerate(ds.rows)}
    assert lengths == {"f1": 72000, "f2": 144000}
    assert all(len(ds[i]["input"]) == len(ds[i]["target"]) for i in range(len(ds)))
    assert len(ClipDataset(manifest, "valid", **kwargs)) == 3  # without min_seconds every file counts


def test_a_full_band_validation_set_keeps_only_references_whose_band_reaches_their_nyquist(tmp_path):
    """ViSQOL against a reference that stops at 16 kHz rewards a model for leaving the band above it empty:
    `full_band` keeps the references `eval` calls full band (measured >= 90 % of their own Nyquist: a
    44.1 kHz file counts), and leaves out a 48 kHz file whose band stops at 16 kHz."""
    import soxr

    folder = tmp_path / "bands"
    folder.mkdir()
    wide = broadband(48000, 4.0, seed=1)[:, 0]
    sf.write(folder / "wide48.wav", wide, 48000)
    sf.write(folder / "wide44.wav", broadband(44100, 4.0, seed=2)[:, 0], 44100)
    narrow = soxr.resample(soxr.resample(broadband(48000, 4.0, seed=3)[:, 0], 48000, 32000), 32000, 48000)
    sf.write(folder / "narrow48.wav", narrow, 48000)
    manifest = tmp_path / "manifest.jsonl"
    assert main(["dataset", "folder", str(folder), "--manifest", str(manifest), "--no-progress"]) == 0
    rows = [{**r, "split": "valid"} for r in read_manifest(manifest)]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kwargs = dict(seconds=3.0, length=32, cache_dir=tmp_path / "cache", progress=False, fixed_cutoff_hz=8000.0,
                  per_source=4)
    assert sorted(Path(r["path"]).stem for r in ClipDataset(manifest, "valid", **kwargs).rows) == \
        ["narrow48", "wide44", "wide48"]
    full = ClipDataset(manifest, "valid", full_band=True, **kwargs)
    assert sorted(Path(r["path"]).stem for r in full.rows) == ["wide44", "wide48"]


def test_small_folder_fills_every_split_or_says_how_many(tmp_path):
    """Four files that all hash into `train`: training would end in "no usable 'valid' files"."""
    folder = tmp_path / "small"
    folder.mkdir()
    for i, name in enumerate("abce"):
        sf.write(folder / f"{name}.wav", broadband(48000, 1.0, seed=i)[:, 0], 48000)
    assert all(assign_split(f"folder:small/{n}.wav") == "train" for n in "abce")
    manifest = tmp_path / "manifest.jsonl"
    assert main(["dataset", "folder", str(folder), "--manifest", str(manifest), "--no-progress"]) == 0
    splits = [r["split"] for r in read_manifest(manifest)]
    assert sorted(splits) == ["test", "train", "train", "valid"]
    again = tmp_path / "again.jsonl"
    assert main(["dataset", "folder", str(folder), "--manifest", str(again), "--no-progress"]) == 0
    assert [r["split"] for r in read_manifest(again)] == splits  # deterministic
    valid = ClipDataset(manifest, "valid", seconds=0.25, length=2, cache_dir=tmp_path / "cache", progress=False)
    assert len(valid) == 2
    two = tmp_path / "two"
    two.mkdir()
    for name in "ab":
        (two / f"{name}.wav").write_bytes((folder / f"{name}.wav").read_bytes())
    assert main(["dataset", "folder", str(two), "--manifest", str(tmp_path / "two.jsonl"), "--no-progress"]) == 0
    with pytest.raises(ValueError, match="need at least 3 recordings"):
        ClipDataset(tmp_path / "two.jsonl", "valid", seconds=0.25, cache_dir=tmp_path / "cache", progress=False)


def test_lossy_files_teach_nothing_above_the_lossy_ceiling(tmp_path):
    """A Vorbis file's ceiling is capped (its thinned-out top octave is cut from the target, the cutoff
    drawn below the cap); a lossless file keeps its own bandwidth."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    sf.write(folder / "lossless.flac", broadband(48000, 3.0, seed=4)[:, 0], 48000, subtype="PCM_16")
    sf.write(folder / "lossy.ogg", broadband(48000, 3.0, seed=5)[:, 0], 48000, format="OGG", subtype="VORBIS")
    manifest = tmp_path / "manifest.jsonl"
    assert main(["dataset", "folder", str(folder), "--manifest", str(manifest), "--no-progress"]) == 0
    rows = {Path(r["path"]).suffix: r for r in read_manifest(manifest)}
    assert is_lossy(rows[".ogg"]) and not is_lossy(rows[".flac"])
    assert rows[".ogg"]["bandwidth"] > 15000  # Vorbis keeps a band the cap must remove
    kwargs = dict(split=None, seconds=0.5, seed=2, length=40, cache_dir=tmp_path / "cache", progress=False)
    capped = ClipDataset(manifest, lossy_ceiling_hz=12000.0, **kwargs)
    plain = ClipDataset(manifest, **kwargs)
    seen = {".ogg": 0, ".flac": 0}
    for i in range(len(capped)):
        it, before = capped[i], plain[i]
        ceiling, cutoff = float(it["ceiling"]), float(it["cutoff"])
        if ceiling <= 12000.0:  # the Vorbis file
            seen[".ogg"] += 1
            assert float(before["ceiling"]) > 15000
            assert cutoff <= 0.9 * 12000.0 + 1
            assert band_energy_above(it["target"].numpy(), 48000, 12500) < 1e-6
            assert band_energy_above(before["target"].numpy(), 48000, 12500) > 1e-4
        else:
            seen[".flac"] += 1
            assert ceiling == float(before["ceiling"]) > 20000
    assert seen[".ogg"] > 0 and seen[".flac"] > 0


def test_clip_dataset_draws_user_chains_and_recording_colours(corpus):
    """condition_prob: inputs a telephone line, a VoIP codec or an MP3/AAC wall made; chain_eq_prob: the
    target itself coloured by a random recording chain, so input and target carry the same one."""
    pytest.importorskip("av")
    from bandlift.train.conditions import CONDITIONS

    root, manifest = corpus
    plain = ClipDataset(manifest, split=None, seconds=0.5, rate=48000, seed=3, length=12,
                        cache_dir=root / "cache", progress=False)
    chains = ClipDataset(manifest, split=None, seconds=0.5, rate=48000, seed=3, length=12,
                         cache_dir=root / "cache", progress=False, condition_prob=1.0, chain_eq_prob=1.0)
    chain_cutoffs = {c.cutoff_hz for c in CONDITIONS.values()}
    coloured = 0
    for i in range(len(chains)):
        item, reference = chains[i], plain[i]
        c = float(item["cutoff"])
        assert c in chain_cutoffs and c <= 0.9 * float(item["ceiling"]) * 1.01
        assert band_energy_above(item["input"].numpy(), 48000, c * 1.15) < 1e-3
        # the same crop: a gain or polarity keeps |correlation| at 1, a colour does not
        coloured += abs(np.corrcoef(item["target"].numpy(), reference["target"].numpy())[0, 1]) < 0.995
    assert coloured >= 8  # (a chain can come out near flat)
    uncoloured = ClipDataset(manifest, split=None, seconds=0.5, rate=48000, seed=3, length=12,
                             cache_dir=root / "cache", progress=False, condition_prob=1.0)
    assert all(abs(np.corrcoef(uncoloured[i]["target"].numpy(), plain[i]["target"].numpy())[0, 1]) > 0.9999
               for i in range(len(plain)))  # the same crops
