"""The training cache: each manifest row decoded and resampled once to float32 [channels, n] .npy
(soxr VHQ), named by the file's path, size, mtime and the rate, written atomically."""
from __future__ import annotations

import hashlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from bandlift.train.data.sources import load_audio


def cache_path(cache_dir: Path, row: dict, rate: int) -> Path:
    """Where the decoded, resampled float32 copy of a manifest row lives."""
    key = f"{row['path']}|{row.get('size')}|{row.get('mtime')}|{rate}"
    return Path(cache_dir) / f"{hashlib.sha1(key.encode()).hexdigest()[:20]}.npy"


def build_cache(row: dict, path: Path, rate: int) -> int:
    """Decode, resample to `rate` (soxr VHQ), write float32 [channels, n] atomically; returns n."""
    import soxr

    data, sr = load_audio(row["path"])
    if sr != rate:
        data = soxr.resample(data.T, sr, rate, quality="VHQ").T
    data = np.ascontiguousarray(data, dtype=np.float32)
    from bandlift.rt.io.files import replacing

    with replacing(path) as tmp:
        np.save(tmp, data)
    return data.shape[1]


def _build_cache_safe(job):
    row, path, rate = job
    try:
        if not Path(path).exists():
            build_cache(row, Path(path), rate)
        return None
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"


def build_caches(rows: list[dict], cache_dir: Path, rate: int, jobs: int = 1,
                 progress: bool = True) -> list:
    """Fill the cache for `rows` (in `jobs` processes); returns [(path, error)] of failures."""
    from bandlift.rt.cli.progress import progress_bar

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    todo = [(r, str(cache_path(cache_dir, r, rate)), rate) for r in rows]
    todo = [j for j in todo if not Path(j[1]).exists()]
    errors = []
    with progress_bar(total=len(todo), desc=f"caching @ {rate} Hz", unit="file", disable=not progress) as bar:
        if jobs > 1 and len(todo) > 1:
            with ProcessPoolExecutor(jobs) as pool:
                for job, err in zip(todo, pool.map(_build_cache_safe, todo, chunksize=4)):
                    if err:
                        errors.append((job[0]["path"], err))
                    bar.update()
        else:
            for job in todo:
                err = _build_cache_safe(job)
                if err:
                    errors.append((job[0]["path"], err))
                bar.update()
    return errors
