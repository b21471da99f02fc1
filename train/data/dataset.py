"""Training clips: random crops of cached 48 kHz float32 audio, degraded on the fly.

    ds = ClipDataset("/work/data/manifest.jsonl", "train", seconds=1.0, rate=48000, seed=0)
    item = ds[i]   # {"target": [N], "input": [N], "cutoff": scalar Hz, "ceiling": scalar Hz}

`split` is "train", "valid", "test" or None (all rows). Each manifest file is decoded once, resampled to `rate` (soxr VHQ) and cached as a float32 .npy of
shape [channels, n]; items read crops through np.load(mmap_mode="r"), so the corpus is never held in
memory. Each channel of a stereo file is a separate mono view. A view is picked with probability
proportional to its length, then a crop; near-silent crops are redrawn. Everything an item does is
drawn from np.random.default_rng([seed, epoch, index]): reproducible, and independent of worker
count or order.

Lossy and band-limited files: a file measured at bandwidth B (its "ceiling") is low-passed at B, and
its input cutoff is drawn at or below 0.9*B, so the model is never asked to produce content the
reference lacks. `condition_prob` of the inputs come through a real user chain (telephone, VoIP,
MP3/AAC: train/conditions.py); `chain_eq_prob` of the clips are coloured by a random recording chain
(tilt and resonances, target and input alike), so the model reads the chain from the passband
instead of memorising the corpus's. Files with B below `min_bandwidth` are left out. A lossy codec thins out the band
just below its lowpass, so `lossy_ceiling_hz` caps the ceiling of lossy files: only lossless ones
teach the top octave.

`fixed_cutoff_hz` (with `per_source`, `min_seconds`) makes a fixed perceptual validation set instead: the first
files of each source, each from its start, through one input rate, as `bandlift eval` judges them;
`full_band` keeps only references whose measured band reaches 90 % of their Nyquist (`eval`'s full-band
references): against a band-limited one, ViSQOL rewards a model for leaving the top of the band empty.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from bandlift.train import conditions
from bandlift.train.degrade import MIN_CUTOFF, degrade, recording_chain
from bandlift.train.eval.references import REFERENCE_BAND_WARN
from bandlift.train.data.cache import build_cache, cache_path
from bandlift.train.data.sources import TRAINING_FIELDS, DataError, first_per_source, is_lossy, read_manifest
from bandlift.train.losses import lowpass_at

SILENCE_RMS_DBFS = -50.0
CEILING_MARGIN = 0.9  # cutoff <= 0.9 * measured bandwidth


class ClipDataset(torch.utils.data.Dataset):
    def __init__(self, manifest, split: str | None = "train", seconds: float = 1.0, rate: int = 48000,
                 seed: int = 0, length: int | None = None, cache_dir=None,
                 min_bandwidth: float = MIN_CUTOFF / CEILING_MARGIN, sources=None,
                 margin: int = 4096, gain_db: tuple = (-20.0, -1.0), noise_prob: float = 0.2,
                 progress: bool = True, source_balance: float = 0.0, fixed_cutoff_hz: float | None = None,
                 per_source: int | None = None, min_seconds: float = 0.0, lossy_ceiling_hz: float | None = None,
                 condition_prob: float = 0.0, chain_eq_prob: float = 0.0, full_band: bool = False):
        self.manifest = Path(manifest)
        self.split, self.rate, self.seed = split, int(rate), int(seed)
        self.n = int(round(seconds * rate))
        self.margin = int(margin)
        self.gain_db, self.noise_prob = gain_db, noise_prob
        self.condition_prob, self.chain_eq_prob = condition_prob, chain_eq_prob
        self.epoch = 0
        self.cache_dir = Path(cache_dir) if cache_dir else self.manifest.parent / "cache" / str(rate)
        if not self.manifest.is_file():
            raise DataError(f"manifest not found: {self.manifest} (see `bandlift dataset`)")
        rows = [r for r in read_manifest(self.manifest, TRAINING_FIELDS) if split is None or r.get("split") == split]
        if sources is not None:
            rows = [r for r in rows if r["source"] in set(sources)
                    or r["source"].split(":")[0] in set(sources)]
        self.too_narrow = [r for r in rows if r["bandwidth"] < min_bandwidth]
        rows = [r for r in rows if r["bandwidth"] >= min_bandwidth]
        self.fixed_cutoff_hz = fixed_cutoff_hz
        if fixed_cutoff_hz is not None:  # files whose band reaches above this input's
            rows = [r for r in rows if CEILING_MARGIN * min(r["bandwidth"], rate / 2) >= fixed_cutoff_hz]
        if fixed_cutoff_hz is not None and min_seconds:  # as `eval` judges: files long enough for ViSQOL
            rows = [r for r in rows if float(r.get("duration", 0.0)) >= min_seconds]
        if full_band:  # references whose band reaches what `eval` calls full band (of their own Nyquist)
            rows = [r for r in rows if r["bandwidth"] >= REFERENCE_BAND_WARN * min(float(r.get("sample_rate") or rate), rate) / 2]
        if per_source is not None:  # the first files of each source by path, as `eval --per-source`
            rows = first_per_source(rows, per_source)
        if not rows:
            from bandlift.train.data.sources import SPLIT_FRACTIONS, SPLITS

            shares = "/".join(f"{f:.0%}" for f in SPLIT_FRACTIONS)
            raise DataError(f"no usable {split!r} files in {self.manifest} "
                            f"({len(self.too_narrow)} below {min_bandwidth:.0f} Hz bandwidth); splits "
                            f"({'/'.join(SPLITS)}: {shares} of the recordings) need at least {len(SPLITS)} "
                            "recordings: index at least that many with `bandlift dataset folder`")
        self.cache_dir.mkdir(parents=True, exist_ok=True)  # only once the manifest has proved usable
        self.rows, self.files, self.failed = [], [], []
        self._prepare(rows, progress)
        # each file's ceiling (Hz): its measured bandwidth, at most lossy_ceiling_hz for a lossy file
        self.ceilings = [min(float(r["bandwidth"]), self.rate / 2,
                             float(lossy_ceiling_hz) if lossy_ceiling_hz and is_lossy(r) else np.inf)
                         for r in self.rows]
        lengths = []
        self.views = []  # (file index, channel)
        for i, (row, (_, channels, frames)) in enumerate(zip(self.rows, self.files)):
            for c in range(channels):
                self.views.append((i, c))
                lengths.append(frames)
        # source_balance b: a view's weight is its length / (its source's total length) ** b, so
        # 0 draws by length and 1 draws every source equally often (small lossless sets count)
        weights = np.asarray(lengths, dtype=np.float64)
        view_sources = np.array([self.rows[i].get("source", "") for i, _ in self.views])
        for source in set(view_sources):
            mine = view_sources == source
            weights[mine] /= weights[mine].sum() ** float(source_balance)
        self.view_cdf = np.cumsum(weights)
        self.view_cdf /= self.view_cdf[-1]
        self.total_seconds = float(sum(lengths)) / self.rate
        self.length = int(length) if length is not None else max(1, int(self.total_seconds * rate // self.n))
        if fixed_cutoff_hz is not None:
            self.length = min(self.length, len(self.rows))
        self._maps: dict = {}

    def _prepare(self, rows, progress):
        from bandlift.rt.cli.progress import progress_bar

        for row in progress_bar(rows, desc=f"caching {self.split} @ {self.rate} Hz", unit="file",
                                disable=not progress):
            path = cache_path(self.cache_dir, row, self.rate)
            try:
                if not path.exists():
                    build_cache(row, path, self.rate)
                arr = np.load(path, mmap_mode="r")
            except Exception as exc:  # noqa: BLE001 - report, skip the file
                self.failed.append((row["path"], f"{type(exc).__name__}: {exc}"))
                continue
            self.rows.append(row)
            self.files.append((path, arr.shape[0], arr.shape[1]))
        if self.failed:
            print(f"ClipDataset: skipped {len(self.failed)} unreadable file(s), e.g. "
                  f"{self.failed[0][0]}: {self.failed[0][1]}", file=sys.stderr)
        if not self.rows:
            raise DataError(f"no readable {self.split!r} files in {self.manifest}")

    def __getstate__(self):  # memmaps are reopened in each DataLoader worker
        state = dict(self.__dict__)
        state["_maps"] = {}
        return state

    def set_epoch(self, epoch: int) -> None:
        """New crops and degradations per epoch (call before creating the epoch's iterator)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def _array(self, i: int) -> np.ndarray:
        arr = self._maps.get(i)
        if arr is None:
            arr = self._maps[i] = np.load(self.files[i][0], mmap_mode="r")
        return arr

    def _crop(self, rng: np.random.Generator):
        """A window of n + 2*margin samples (zero-padded if the file is shorter), not silent."""
        total = self.n + 2 * self.margin
        best, best_rms, best_file = None, -1.0, 0
        for _ in range(10):
            i, c = self.views[int(np.searchsorted(self.view_cdf, rng.random(), side="right"))]
            frames = self.files[i][2]
            start = int(rng.integers(0, max(frames - total, 0) + 1))
            win = np.asarray(self._array(i)[c, start:start + total], dtype=np.float64)
            if len(win) < total:
                offset = int(rng.integers(0, total - len(win) + 1))
                win = np.pad(win, (offset, total - len(win) - offset))
            centre = win[self.margin:self.margin + self.n]
            rms = float(np.sqrt(np.mean(centre * centre)))
            if rms > best_rms:
                best, best_rms, best_file = win, rms, i
            if 20 * np.log10(rms + 1e-12) > SILENCE_RMS_DBFS:
                break
        return best, best_file

    def _fixed_item(self, index: int) -> dict:
        """File `index`'s first channel from its start, judged as `eval` does: resampled through a
        rate of twice the fixed cutoff (soxr VHQ), no gain, noise or polarity drawn."""
        total = self.n + self.margin
        win = np.zeros(self.margin + total)
        head = np.asarray(self._array(index)[0, :total], dtype=np.float64)
        win[self.margin:self.margin + len(head)] = head  # silence before the file: the margin's context
        win, ceiling = self._under_ceiling(win, index)
        low, cutoff = degrade(win, self.rate, np.random.default_rng(0), cutoff_hz=self.fixed_cutoff_hz,
                              kind="soxr_vhq", noise_prob=0.0)
        item = self._item(win, low, cutoff, ceiling)
        for key in ("target", "input"):  # a shorter file is judged at its own length, not padded with silence
            item[key] = item[key][:len(head)]
        return item

    def _under_ceiling(self, win: np.ndarray, i: int) -> tuple[np.ndarray, float]:
        """A band-limited file's window low-passed at its ceiling (Hz), and that ceiling: the trainer's
        own cut of the generator's output (`losses.lowpass_at`), so both sides stop at the same bin."""
        ceiling = self.ceilings[i]
        cut = lowpass_at(torch.from_numpy(win)[None], torch.tensor([ceiling], dtype=torch.float64), self.rate)
        return cut[0].numpy(), ceiling

    def _item(self, win: np.ndarray, low: np.ndarray, cutoff: float, ceiling: float) -> dict:
        sl = slice(self.margin, self.margin + self.n)
        return {
            "target": torch.from_numpy(np.ascontiguousarray(win[sl], dtype=np.float32)),
            "input": torch.from_numpy(np.ascontiguousarray(low[sl], dtype=np.float32)),
            "cutoff": torch.tensor(cutoff, dtype=torch.float32),
            "ceiling": torch.tensor(ceiling, dtype=torch.float32),
        }

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        if self.fixed_cutoff_hz is not None:
            return self._fixed_item(index)
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        win, i = self._crop(rng)
        win, ceiling = self._under_ceiling(win, i)
        if rng.random() < self.chain_eq_prob:
            win = recording_chain(win, self.rate, rng, ceiling)
        peak = np.abs(win).max()
        if peak > 0:
            win = win * (10 ** (rng.uniform(*self.gain_db) / 20) / peak)
        if rng.random() < 0.5:
            win = -win
        chain = None
        if self.condition_prob and rng.random() < self.condition_prob:
            chain = conditions.draw(win, self.rate, rng, CEILING_MARGIN * ceiling)
        low, cutoff = chain or degrade(win, self.rate, rng, max_cutoff_hz=CEILING_MARGIN * ceiling,
                                       noise_prob=self.noise_prob)
        return self._item(win, low, cutoff, ceiling)
