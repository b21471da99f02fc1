"""`bandlift dataset ...`: collect training audio and index it into a JSONL manifest.

    bandlift dataset debian [--packages ...] [--dest DIR]   real recordings from Debian packages
    bandlift dataset folder DIR... [--dest DIR]             your own files, recursively
    bandlift dataset spotify --query/--artist/--genre/--playlist ...   30 s previews (spotipy)
    bandlift dataset info [--dest DIR | --manifest FILE]     hours per source and split, bandwidths

No torch import here (the CLI builds every subcommand's parser).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from bandlift.rt.cli.errors import CLIError, in_range, missing_extra, write_json

SPOTIFY_HELP = "collect 30 s Spotify previews (spotipy; SPOTIPY_CLIENT_ID/SECRET from the environment)"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)

    def common(p):
        p.add_argument("--dest", type=Path, default=None,
                       help="data folder (default: $BANDLIFT_DATA or ~/.cache/bandlift/data)")
        p.add_argument("--manifest", type=Path, default=None,
                       help="manifest to update (default: DEST/manifest.jsonl)")
        p.add_argument("--jobs", type=int, default=1, help="indexing processes (default 1)")
        p.add_argument("--json", type=Path, default=None, help="write the summary as JSON")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.add_argument("--force", action="store_true",
                       help="re-measure every file (default: reuse rows of unchanged files)")

    from bandlift.train.data import debian as data_debian
    from bandlift.train.data.sources import CATEGORIES

    p = sub.add_parser("debian", help="apt-get download + dpkg -x Debian packages with recordings",
                       description="Download (apt-get download, no root needed) and unpack (dpkg -x) "
                       "Debian packages with real recordings, then index them. Packages: "
                       + "; ".join(f"{k}: {v.description}" for k, v in data_debian.PACKAGES.items()))
    p.add_argument("--packages", nargs="+", default=list(data_debian.DEFAULT), metavar="PKG",
                   help=f"packages to fetch (default: all {len(data_debian.DEFAULT)}; 'quick' = "
                        + " ".join(data_debian.QUICK) + ")")
    common(p)

    p = sub.add_parser("folder", help="index local audio folders recursively")
    p.add_argument("folders", nargs="+", type=Path, metavar="DIR",
                   help="folders searched recursively for audio files (corrupt files are reported and skipped)")
    p.add_argument("--name", default=None, help="source name (default: folder:<first folder name>)")
    p.add_argument("--licence", default="user-provided", help="licence note for the manifest")
    p.add_argument("--category", choices=CATEGORIES, default="other",
                   help="what `bandlift eval` reports these files under (default: other)")
    common(p)

    p = sub.add_parser("cache", help="decode and resample manifest files into the training cache",
                       description="Pre-build ClipDataset's cache (float32 .npy at --rate) in "
                       "--jobs processes, so training starts at once.")
    p.add_argument("--dest", type=Path, default=None,
                   help="data folder (default: $BANDLIFT_DATA or ~/.cache/bandlift/data)")
    p.add_argument("--manifest", type=Path, default=None, help="manifest (default: DEST/manifest.jsonl)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="default: <manifest folder>/cache/<rate> (ClipDataset's default)")
    p.add_argument("--rate", type=int, default=48000, help="rate of the cached audio in Hz (default 48000)")
    p.add_argument("--split", choices=["train", "valid", "test"], nargs="+", default=None,
                   help="only these splits (default: all)")
    p.add_argument("--jobs", type=int, default=1, help="decoding processes (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("info", help="summarise a manifest: hours per source and split, bandwidths")
    p.add_argument("--dest", type=Path, default=None,
                   help="data folder (default: $BANDLIFT_DATA or ~/.cache/bandlift/data)")
    p.add_argument("--manifest", type=Path, default=None, help="manifest (default: DEST/manifest.jsonl)")
    p.add_argument("--json", type=Path, default=None, help="write the summary as JSON")

    p = sub.add_parser("spotify", help=SPOTIFY_HELP, description=SPOTIFY_HELP)
    p.add_argument("--query", action="append", default=[], metavar="TEXT",
                   help="free-text track search (repeatable)")
    p.add_argument("--artist", action="append", default=[], metavar="NAME",
                   help="tracks by an artist (repeatable)")
    p.add_argument("--genre", action="append", default=[], metavar="GENRE",
                   help="tracks of a genre (repeatable)")
    p.add_argument("--playlist", action="append", default=[], metavar="ID_OR_URL",
                   help="all tracks of a playlist (repeatable)")
    p.add_argument("--limit", type=int, default=100,
                   help="tracks per query/artist/genre (default 100; playlists: all)")
    p.add_argument("--market", default=None, help="ISO country code for search")
    p.add_argument("--max-wait", type=float, default=300.0,
                   help="longest Retry-After to sit out (s); longer: stop, re-run later to resume")
    common(p)


def _paths(args) -> tuple[Path, Path]:
    from bandlift.train.data.sources import default_data_dir, default_manifest

    try:
        dest = (args.dest or default_data_dir()).expanduser().resolve()
        manifest = (args.manifest or default_manifest(dest)).expanduser().resolve()
    except (RuntimeError, OSError) as exc:  # a symlink loop
        raise CLIError(f"--dest/--manifest: {exc}") from None
    for folder, flag in ((dest, "--dest"), (manifest.parent, "--manifest's folder")):
        if folder.exists() and not folder.is_dir():  # checked before anything is indexed or written
            raise CLIError(f"{flag} {folder}: not a folder")
    return dest, manifest


MAX_JOBS = 64


def run(args) -> int:
    if hasattr(args, "jobs"):
        in_range(args.jobs, "--jobs", 1, MAX_JOBS)
    if args.source == "info":
        return _info(args)
    if args.source == "cache":
        return _cache(args)
    if args.source == "debian":
        return _debian(args)
    if args.source == "folder":
        return _folder(args)
    if args.source == "spotify":
        return _spotify(args)
    raise CLIError(f"unknown source {args.source!r}")


def index_and_write(candidates, sources: set[str], manifest: Path, args, desc: str, fill: bool = False) -> dict:
    """Index candidates (reusing unchanged rows), merge into the manifest, print a summary; `fill`: a small
    set gets a file in every split (data.sources.fill_splits)."""
    from bandlift.train.data import sources as ds

    previous = {} if getattr(args, "force", False) else ds.previous_rows(manifest)
    result = ds.index_files(candidates, previous, jobs=args.jobs,
                            progress=not getattr(args, "no_progress", False), desc=desc)
    ds.report_errors(result.errors)
    if fill:
        ds.fill_splits(result.rows)
    ds.merge_manifest(manifest, result.rows, sources)
    summary = {
        "manifest": str(manifest),
        "indexed_files": len(result.rows),
        "reused_rows": result.reused,
        "skipped_files": [{"path": p, "error": e} for p, e in result.errors],
        "seconds": round(result.seconds, 2),
        "decoded_files": len(result.rows) - result.reused,
        "decoded_audio_hours": round(result.decoded_audio_seconds / 3600, 4),
        "files_per_second": round((len(result.rows) - result.reused) / max(result.seconds, 1e-9), 2),
        "audio_hours_per_second": round(result.decoded_audio_seconds / 3600 / max(result.seconds, 1e-9), 5),
        "sources": ds.summarize(result.rows) if result.rows else {},
    }
    _print_summary(summary)
    if getattr(args, "json", None):
        write_json(args.json, summary)
    return summary


def _print_summary(summary: dict) -> None:
    print(f"manifest: {summary['manifest']}")
    if summary.get("decoded_files"):
        print(f"indexed {summary['decoded_files']} file(s) in {summary['seconds']} s: "
              f"{summary['files_per_second']} files/s, {summary['audio_hours_per_second']} audio-h/s"
              + (f" ({summary['reused_rows']} unchanged rows reused)" if summary["reused_rows"] else ""))
    for name, s in summary["sources"].items():
        h = s["hours"]
        bw = s["bandwidth_hz"]
        print(f"  {name}: {s['files']} files, {s['hours_total']:.3f} h "
              f"(train {h['train']:.3f} / valid {h['valid']:.3f} / test {h['test']:.3f}); "
              f"bandwidth median {bw['median'] / 1000:.1f} kHz, p10 {bw['p10'] / 1000:.1f} kHz, "
              f"{bw['files_below_16k']} files < 16 kHz")


def _spotify(args) -> int:
    dest, manifest = _paths(args)
    if importlib.util.find_spec("spotipy") is None:
        raise missing_extra("dataset spotify", "train")
    from bandlift.train.data import spotify as data_spotify

    specs = ([("query", v) for v in args.query] + [("artist", v) for v in args.artist]
             + [("genre", v) for v in args.genre] + [("playlist", v) for v in args.playlist])
    if not specs:
        raise CLIError("give at least one --query, --artist, --genre or --playlist")
    in_range(args.limit, "--limit", 1, data_spotify.MAX_LIMIT)  # Spotify pages search results up to there
    in_range(args.max_wait, "--max-wait", 0, 86400)
    counts, candidates, stopped = data_spotify.collect(specs, dest / "spotify", args.limit, args.market,
                                                       args.max_wait, progress=not args.no_progress)
    summary = index_and_write(candidates, {data_spotify.SOURCE}, manifest, args, "indexing spotify")
    summary.update(spotify=counts)
    if args.json:
        write_json(args.json, summary)
    if stopped:
        print(f"stopped early: {stopped}; run the same command again to resume", file=sys.stderr)
        return 3
    return 0


def _debian(args) -> int:
    from bandlift.train.data import debian as data_debian

    dest, manifest = _paths(args)
    packages = []
    for name in args.packages:
        packages.extend(data_debian.QUICK if name == "quick" else [name])
    candidates = []
    for name in packages:
        root = data_debian.fetch_package(name, dest, log=lambda m: print(m, file=sys.stderr))
        found = data_debian.candidates(name, root)
        if not found:
            print(f"warning: no audio files in {name}", file=sys.stderr)
        candidates.extend(found)
    index_and_write(candidates, {f"debian:{n}" for n in packages}, manifest, args, "indexing debian")
    return 0


def folder_candidates(folders: list[Path], source: str, licence: str, category: str = "other"):
    from bandlift.train.data.sources import AUDIO_EXTENSIONS, Candidate

    out = []
    for folder in folders:
        folder = folder.expanduser().resolve()
        if not folder.is_dir():
            raise CLIError(f"not a folder: {folder}")
        for f in sorted(folder.rglob("*")):
            if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS:
                rel = f.relative_to(folder).as_posix()
                out.append(Candidate(str(f), source, licence, f"{source}:{folder.name}/{rel}",
                                     {"category": category}))
    return out


def _folder(args) -> int:
    from bandlift.train.data.sources import AUDIO_EXTENSIONS

    _, manifest = _paths(args)
    source = args.name or f"folder:{args.folders[0].expanduser().resolve().name}"
    candidates = folder_candidates(args.folders, source, args.licence, args.category)
    if not candidates:
        raise CLIError("no audio files found (looked for " + ", ".join(
            sorted(AUDIO_EXTENSIONS)) + ")")
    index_and_write(candidates, {source}, manifest, args, f"indexing {source}", fill=True)
    return 0


def _manifest_rows(args, required=("path",)):
    """(manifest path, its rows); a malformed manifest is a DataError."""
    from bandlift.train.data import sources as ds

    _, manifest = _paths(args)
    return manifest, ds.read_manifest(manifest, required)


def _info(args) -> int:
    from bandlift.train.data import sources as ds

    manifest, rows = _manifest_rows(args, ds.TRAINING_FIELDS)
    if not rows:
        raise CLIError(f"no manifest rows in {manifest} (run `bandlift dataset debian` first)")
    summary = {"manifest": str(manifest), "sources": ds.summarize(rows)}
    _print_summary(summary)
    if args.json:
        write_json(args.json, summary)
    return 0


def _cache(args) -> int:
    from bandlift.rt.model.contract import MAX_RATE
    from bandlift.train.data import sources as ds
    from bandlift.train.data.cache import build_caches

    in_range(args.rate, "--rate", 1000, MAX_RATE)
    manifest, rows = _manifest_rows(args)
    rows = [r for r in rows if args.split is None or r.get("split") in args.split]
    if not rows:
        raise CLIError(f"no manifest rows in {manifest}")
    cache_dir = args.cache_dir or manifest.parent / "cache" / str(args.rate)
    errors = build_caches(rows, cache_dir, args.rate, jobs=args.jobs, progress=not args.no_progress)
    ds.report_errors(errors)
    print(f"cache: {cache_dir} ({len(rows) - len(errors)} files ready)")
    return 0
