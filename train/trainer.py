"""GAN training: config file -> run folder with checkpoints, metrics CSV, best model; resumable; DDP.

The run folder holds ``config.yaml`` (a copy), ``last.pt`` (written every ``ckpt_every`` steps and on
exit), ``best.pt`` (highest validation ViSQOL on a small fixed subset, LSD breaking ties) and
``metrics.csv``. Checkpoints carry the generator's constructor arguments as plain data and never run
code (train/checkpoints.py); recipes may name a parent (train/recipes.py).
Multi-process: launch with ``torchrun --nproc_per_node N -m bandlift.train.trainer --config FILE``
(gloo on CPU, nccl on GPU); each rank draws different clips.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import math
import os
import signal
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel

from bandlift.rt.cli.progress import progress_bar
from bandlift.train.checkpoints import load_checkpoint
from bandlift.train.data.sources import SUBSET_MIN_SECONDS
from bandlift.train.discriminators import Discriminators
from bandlift.train.layers import count_params
from bandlift.train.losses import LOSS_TERMS, Judged, discriminator_loss, high_band, lowpass_at, lsd_torch
from bandlift.train.model import Generator, GeneratorConfig
from bandlift.train.recipes import merge, read_recipe

# The one set of training defaults; the model's come from GeneratorConfig (not the shipped model's geometry:
# that travels in its metadata, `bandlift.config`).
# YAML files override any of them.
DEFAULTS: dict = {
    "model": GeneratorConfig().to_dict(),
    "data": {"manifest": None, "seconds": 0.5, "batch_size": 8, "workers": 1, "valid_clips": 32,
             "visqol_clips": 32, "visqol_seconds": 3.0, "visqol_cutoff_hz": 8000.0, "visqol_per_source": 4,
             "visqol_full_band": False,  # judge ViSQOL on full-band references only (eval's; issue 21's Must)
             "source_balance": 0.7,
             "lossy_ceiling_hz": None,  # Hz: lossy files teach nothing above this (None: their bandwidth)
             "condition_prob": 0.0,  # share of inputs made by a real user chain (telephone, VoIP, MP3/AAC)
             "chain_eq_prob": 0.0,  # share of clips coloured by a random recording chain (target and input)
             "disc_seconds": 0.25},  # discriminators judge a random crop of this length
    "train": {
        "steps": 40000, "lr": 5e-4, "lr_disc": 2e-4, "betas": [0.8, 0.99], "gan_start": 4000,
        "ckpt_every": 250, "valid_every": 1000, "log_every": 50, "seed": 0, "threads": 1,
        "max_minutes": None, "init": None,
    },
    # the weight of each of LOSS_TERMS, and the STFT term's resolutions
    "loss": {**{term.name: term.default for term in LOSS_TERMS}, "ffts": [256, 512, 1024, 2048]},
}
VALID_SEED = 1234
GRAD_CLIP_NORM = 10.0  # both networks' gradients are clipped to this norm before each update
LR_FLOOR = 0.1  # each learning rate follows a cosine from its recipe's value down to this fraction of it


def _leave_stops_to_the_trainer(_worker_id: int) -> None:
    """Data workers ignore SIGTERM and SIGINT: a stop sent to the whole process group (a session or job
    ending, Ctrl-C) reaches the trainer, which saves last.pt and ends them; a worker that died of it first
    made the trainer fail with a traceback instead. A worker still exits when the trainer is gone."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def load_config(path: str | Path | None, overrides: dict | None = None) -> dict:
    """DEFAULTS < the recipe at `path` (and its parents) < `overrides`."""
    return merge(merge(DEFAULTS, read_recipe(path) if path else {}), overrides or {})


class Trainer:
    def __init__(self, config: dict, run_dir: str | Path):
        self.cfg = config
        self.run_dir = Path(run_dir)
        self.distributed = dist.is_available() and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.device = torch.device(f"cuda:{self.rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu")
        self._limit_threads()
        torch.manual_seed(int(config["train"]["seed"]) + self.rank)

        self.gen = Generator(GeneratorConfig.from_dict(config["model"])).to(self.device)
        self.disc = Discriminators().to(self.device)
        tcfg = config["train"]
        self.opt_g = torch.optim.AdamW(self.gen.parameters(), tcfg["lr"], betas=tcfg["betas"])
        self.opt_d = torch.optim.AdamW(self.disc.parameters(), tcfg["lr_disc"], betas=tcfg["betas"])
        self.step = self.skipped_steps = 0  # skipped: updates dropped for non-finite gradients
        self.best_lsd = math.inf
        self.best_score = (-math.inf, -math.inf)  # (ViSQOL, -LSD) of best.pt
        self.valid_key = None  # which validation files best_score was measured on
        self.epoch = 0
        if not self._resume() and tcfg.get("init"):
            self._init_from(tcfg["init"])
        if self.rank == 0:  # (after the checks: a refused resume leaves the run's config as it was)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.sched_g, self.sched_d = (self._scheduler(opt, tcfg[key]) for opt, key in
                                      ((self.opt_g, "lr"), (self.opt_d, "lr_disc")))
        if self.distributed:
            self.gen_ddp = DistributedDataParallel(self.gen)
            self.disc_ddp = DistributedDataParallel(self.disc)
        else:
            self.gen_ddp, self.disc_ddp = self.gen, self.disc

    def _scheduler(self, opt, lr: float):
        """One learning-rate schedule per optimiser: a half cosine from the recipe's rate at step 0 to
        LR_FLOOR of it at train.steps (a resumed run continues it: its state is the step, not saved)."""
        steps = self.cfg["train"]["steps"]
        for group in opt.param_groups:
            group["initial_lr"] = lr
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: (1 + LR_FLOOR) / 2 + (1 - LR_FLOOR) / 2 * math.cos(math.pi * min(1.0, step / max(steps, 1))),
            last_epoch=self.step - 1)

    # ------------------------------------------------------------------ checkpoints
    def _resume(self) -> bool:
        last = self.run_dir / "last.pt"
        if not last.exists():
            return False
        ckpt = load_checkpoint(last, self.device)
        self._check_same_model(ckpt, f"resuming from {last}")
        self.gen.load_state_dict(ckpt["generator"])
        self.disc.load_state_dict(ckpt["discriminators"])
        self.opt_g.load_state_dict(ckpt["opt_g"])
        self.opt_d.load_state_dict(ckpt["opt_d"])
        self.step, self.best_lsd = ckpt["step"], ckpt["best_lsd"]
        self.best_score = tuple(ckpt.get("best_score", (-math.inf, -self.best_lsd)))
        self.valid_key = ckpt.get("valid_key")
        self.epoch = int(ckpt.get("epoch", 0))
        if self.rank == 0:
            print(f"resumed from {last} at step {self.step} (best valid LSD {self.best_lsd:.3f})")
        return True

    def _limit_threads(self) -> None:
        """train.threads for torch and for numba's parallel loops (ViSQOL's validation runs them): with
        numba's OpenMP pool at its default (every core) beside torch's, each validation left a spinning
        thread behind, and two runs on 2 cores fell from ~2 to 0.05 steps/s."""
        import numba

        threads = int(self.cfg["train"]["threads"])
        torch.set_num_threads(threads)
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))

    def _check_same_model(self, ckpt: dict, what: str) -> None:
        """A checkpoint's weights belong to its own model config: another one (a recipe changed since, the
        wrong run folder) is refused with the keys that differ, not loaded into a model that runs otherwise."""
        theirs = GeneratorConfig.from_dict(ckpt["config"]["model"]).to_dict()
        ours = GeneratorConfig.from_dict(self.cfg["model"]).to_dict()
        changed = [f"{key} {theirs[key]!r} -> {ours[key]!r}" for key in ours if theirs[key] != ours[key]]
        if changed:
            raise ValueError(f"{what}: its model config differs from this run's ({'; '.join(changed)}); "
                             f"train with the recipe it was trained with, or in a new run folder")

    def _init_from(self, checkpoint):
        """Fine-tuning: start from another run's weights (generator, and discriminators when the
        checkpoint has them) with fresh optimisers, step 0 and this run's schedule."""
        ckpt = load_checkpoint(checkpoint, self.device)
        self._check_same_model(ckpt, f"train.init {checkpoint}")
        self.gen.load_state_dict(ckpt["generator"])
        if "discriminators" in ckpt:
            self.disc.load_state_dict(ckpt["discriminators"])
        if self.rank == 0:
            print(f"initialised from {checkpoint} (its step {ckpt.get('step')})")

    def save(self, name: str = "last.pt"):
        if self.rank != 0:
            return
        ckpt = {
            "generator": self.gen.state_dict(), "discriminators": self.disc.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "step": self.step, "best_lsd": self.best_lsd, "best_score": list(self.best_score),
            "valid_key": self.valid_key,
            "epoch": self.epoch, "config": self.cfg,
            "params": count_params(self.gen), "world_size": self.world,
        }
        tmp = self.run_dir / (name + ".tmp")
        torch.save(ckpt, tmp)
        tmp.replace(self.run_dir / name)  # atomic: an interruption never leaves a torn checkpoint

    # ------------------------------------------------------------------ data
    def _loaders(self):
        from bandlift.train.data.dataset import ClipDataset

        dcfg = self.cfg["data"]
        seed = int(self.cfg["train"]["seed"]) * 1000 + self.rank
        train = ClipDataset(dcfg["manifest"], "train", seconds=dcfg["seconds"], seed=seed,
                            source_balance=dcfg["source_balance"], lossy_ceiling_hz=dcfg["lossy_ceiling_hz"],
                            condition_prob=dcfg["condition_prob"], chain_eq_prob=dcfg["chain_eq_prob"])
        valid = ClipDataset(dcfg["manifest"], "valid", seconds=2.0, seed=VALID_SEED, length=dcfg["valid_clips"],
                            source_balance=dcfg["source_balance"], lossy_ceiling_hz=dcfg["lossy_ceiling_hz"])
        # ViSQOL as `eval` measures it: the first visqol_per_source files of each source, 16 kHz input
        # (a cutoff of 8 kHz) by default; random cutoffs ranked sinc above noise-fill here
        perceptual = ClipDataset(dcfg["manifest"], "valid", seconds=dcfg["visqol_seconds"], seed=VALID_SEED + 1,
                                 length=dcfg["visqol_clips"], progress=False, fixed_cutoff_hz=dcfg["visqol_cutoff_hz"],
                                 per_source=dcfg["visqol_per_source"], min_seconds=SUBSET_MIN_SECONDS,
                                 full_band=dcfg.get("visqol_full_band", False))  # a run config older than the key: all
        judged = sorted(r["path"] for r in valid.rows) + [f"{r['path']}@{dcfg['visqol_cutoff_hz']}" for r in perceptual.rows]
        judged.append("visqol: uncut output, files >= 1 s, unpadded")  # since validation judges as eval
        key = hashlib.sha1("\n".join(judged).encode()).hexdigest()[:16]
        if key != self.valid_key and self.best_score[0] > -math.inf:  # scores on other files do not compare
            if self.rank == 0:
                print("validation files changed since best.pt was chosen: the next validation picks anew")
            self.best_lsd, self.best_score = math.inf, (-math.inf, -math.inf)
        self.valid_key = key
        return train, valid, perceptual

    def _epoch_loader(self, train):
        """A fresh loader per epoch: workers get the dataset with its new epoch (crops, gains, cutoffs,
        filters and noise are drawn from [seed, epoch, index]), so no epoch replays another."""
        dcfg = self.cfg["data"]
        train.set_epoch(self.epoch)
        generator = torch.Generator().manual_seed(int(self.cfg["train"]["seed"]) * 1000 + self.rank + self.epoch)
        return torch.utils.data.DataLoader(
            train, batch_size=dcfg["batch_size"], num_workers=dcfg["workers"], shuffle=True,
            drop_last=True, persistent_workers=False, generator=generator, worker_init_fn=_leave_stops_to_the_trainer,
        )

    def _output(self, item, cut: bool = True):
        """The generator's output for one validation item, cut at the reference's ceiling (for LSD, as
        the losses judge lossy references) or not (for ViSQOL, as `eval` judges: nothing knows where
        a reference's band ends, and the band a model writes above it counts)."""
        rate = self.cfg["model"]["sample_rate"]
        x = item["input"].to(self.device)[None]
        cutoff = (item["cutoff"] / (rate / 2)).reshape(1).to(self.device)
        y = self.gen(x, cutoff)
        return lowpass_at(y, item["ceiling"].reshape(1).to(self.device), rate) if cut else y

    def validate(self, valid, perceptual=None) -> tuple[float, float]:
        """(mean LSD on `valid`, mean ViSQOL on `perceptual`; nan without it)."""
        from bandlift.train.eval.metrics import visqol

        self.gen.eval()
        lsds, scores = [], []
        with torch.no_grad():
            for i in range(len(valid)):
                item = valid[i]
                lsds.append(float(lsd_torch(self._output(item), item["target"].to(self.device)[None])))
            for i in range(len(perceptual) if perceptual is not None else 0):
                item = perceptual[i]
                y = self._output(item, cut=False)[0].cpu().numpy()
                scores.append(visqol(item["target"].numpy(), y, self.cfg["model"]["sample_rate"]))
        self.gen.train()
        self._limit_threads()
        return float(np.mean(lsds)), float(np.mean(scores)) if scores else math.nan

    # ------------------------------------------------------------------ loop
    def train_step(self, batch) -> dict:
        tcfg, lcfg = self.cfg["train"], self.cfg["loss"]
        rate = self.cfg["model"]["sample_rate"]
        x = batch["input"].to(self.device)
        target = batch["target"].to(self.device)
        cutoff_hz = batch["cutoff"].to(self.device)
        y = self.gen_ddp(x, cutoff_hz / (rate / 2))
        if "ceiling" in batch:  # lossy references: judge only the band they really have
            y = lowpass_at(y, batch["ceiling"].to(self.device), rate)
        use_gan = self.step >= tcfg["gan_start"]
        logs = {}
        if use_gan:
            # Both sides share the input's own low band: only the band above the cutoff, which the
            # generator writes, can tell real from fake (codec noise in the passband cannot).
            n = min(y.shape[-1], int(self.cfg["data"]["disc_seconds"] * rate))
            start = int(torch.randint(0, y.shape[-1] - n + 1, ()))
            low = lowpass_at(x, cutoff_hz, rate, keep_full=False)
            real_d = (low + high_band(target, cutoff_hz, rate))[..., start:start + n]
            fake_d = (low + high_band(y, cutoff_hz, rate))[..., start:start + n]
            self.opt_d.zero_grad(set_to_none=True)
            loss_d = discriminator_loss(self.disc_ddp(real_d), self.disc_ddp(fake_d.detach()))
            loss_d.backward()
            if self._finite_grads(self.disc):
                torch.nn.utils.clip_grad_norm_(self.disc.parameters(), GRAD_CLIP_NORM)
                self.opt_d.step()
            logs["loss_d"] = loss_d.item()
        self.opt_g.zero_grad(set_to_none=True)
        ceiling = batch["ceiling"].to(self.device) if "ceiling" in batch else torch.full_like(cutoff_hz, rate / 2)
        judged = Judged(y, target, cutoff_hz, ceiling, rate, lcfg["ffts"],
                        correction=getattr(self.gen, "last_correction", None))
        if use_gan:
            judged.judge_fake, judged.judge_real = lambda: self.disc_ddp(fake_d), lambda: self.disc_ddp(real_d)
        loss_g = 0.0
        for term in LOSS_TERMS:
            weight = lcfg.get(term.name, term.default)  # a run's config older than the term: its default
            if (term.gan and not use_gan) or not (term.always or weight):
                continue
            value = term.compute(judged)
            loss_g = loss_g + weight * value
            logs[term.column] = value.item()
        loss_g.backward()
        if self._finite_grads(self.gen):
            torch.nn.utils.clip_grad_norm_(self.gen.parameters(), GRAD_CLIP_NORM)
            self.opt_g.step()
        with warnings.catch_warnings():  # a step skipped (before the GAN's start, a non-finite gradient) still counts
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            self.sched_g.step()
            self.sched_d.step()
        logs["loss_g"] = loss_g.item()
        return logs

    def _finite_grads(self, module) -> bool:
        """A non-finite gradient skips the update (and is counted) instead of poisoning the weights."""
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        finite = bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
        if not finite:
            self.skipped_steps += 1
        return finite

    def fit(self) -> Path:
        tcfg = self.cfg["train"]
        train, valid, perceptual = self._loaders()
        deadline = time.time() + 60 * tcfg["max_minutes"] if tcfg.get("max_minutes") else None
        metrics_path = self.run_dir / "metrics.csv"
        fields = ["step", "time", "epoch", "loss_g", *(term.column for term in LOSS_TERMS), "loss_d",
                  "valid_lsd", "valid_visqol", "skipped"]
        bar = progress_bar(total=tcfg["steps"], initial=self.step, disable=self.rank != 0, desc="train", unit="step")
        started = time.time()

        def out_of_time():
            return self.step >= tcfg["steps"] or (deadline is not None and time.time() > deadline)

        def stop(signum, frame):  # SIGTERM (a session or job ending) saves last.pt as Ctrl-C does
            raise KeyboardInterrupt

        def judge(row: dict) -> dict:
            """Validation; best.pt is the best (ViSQOL first, LSD breaking ties) of all judged steps."""
            lsd, score = self.validate(valid, perceptual) if self.rank == 0 else (math.inf, math.nan)
            self.best_lsd = min(self.best_lsd, lsd)
            candidate = (-math.inf if math.isnan(score) else score, -lsd)
            if candidate > self.best_score:
                self.best_score = candidate
                self.save("best.pt")
            return {**row, "valid_lsd": round(lsd, 4), "valid_visqol": round(score, 4)}

        def write_row(row: dict) -> None:
            nonlocal fields
            new = not metrics_path.exists()
            if not new:  # a resumed run keeps its file's columns
                with metrics_path.open() as fh:
                    fields = next(csv.reader(fh), fields) or fields
            with metrics_path.open("a", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
                if new:
                    writer.writeheader()
                writer.writerow(row)

        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, stop) if in_main else None
        try:
            if self.step == 0 and self.cfg["model"].get("prior"):
                # the untrained prior (the DSP baseline) is the first candidate for best.pt: a run that
                # learns nothing that transfers to the validation sources ships the baseline, not worse
                row = judge({"step": 0, "time": 0.0, "epoch": self.epoch})
                if self.rank == 0:
                    write_row(row)
            while not out_of_time():
                for batch in self._epoch_loader(train):
                    logs = self.train_step(batch)
                    self.step += 1
                    bar.update(1)
                    row = None
                    if self.step % tcfg["log_every"] == 0:
                        row = {"step": self.step, "time": round(time.time() - started, 1), "epoch": self.epoch,
                               **logs, "skipped": self.skipped_steps}
                        bar.set_postfix(stft=f"{logs['loss_stft']:.3f}", **({"skipped": self.skipped_steps}
                                                                           if self.skipped_steps else {}))
                    if self.step % tcfg["valid_every"] == 0 or self.step == tcfg["steps"]:
                        row = judge(row or {"step": self.step, "time": round(time.time() - started, 1), **logs})
                        if bar.disable and self.rank == 0:  # no bar (a log, not a terminal): one line per validation
                            print(f"step {self.step}/{tcfg['steps']}: stft {logs['loss_stft']:.3f}, valid ViSQOL "
                                  f"{row['valid_visqol']:.3f}, LSD {row['valid_lsd']:.3f}" + (f"; {self.skipped_steps} "
                                  "updates skipped (non-finite gradients)" if self.skipped_steps else ""), flush=True)
                    if row is not None and self.rank == 0:
                        write_row(row)
                    if self.step % tcfg["ckpt_every"] == 0:
                        self.save()
                    if out_of_time():
                        break
                else:
                    self.epoch += 1
        finally:
            self.save()
            bar.close()
            if in_main:
                signal.signal(signal.SIGTERM, previous)
        if self.distributed:
            self._check_replicas_agree()
        return self.run_dir / "best.pt"

    def _check_replicas_agree(self):
        """DDP keeps one model: every rank must hold the same weights after training."""
        checksum = torch.stack([p.detach().double().sum() for p in self.gen.parameters()]).sum().reshape(1)
        gathered = [torch.zeros_like(checksum) for _ in range(self.world)]
        dist.all_gather(gathered, checksum)
        if any(not torch.allclose(g, checksum, rtol=1e-9, atol=1e-9) for g in gathered):
            raise RuntimeError(f"replicas diverged: {[float(g) for g in gathered]}")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train the bandlift generator.")
    parser.add_argument("--config", required=False)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--manifest")
    parser.add_argument("--steps", type=int)
    args = parser.parse_args(argv)
    overrides = {"data": {"manifest": args.manifest} if args.manifest else {},
                 "train": {"steps": args.steps} if args.steps else {}}
    Trainer(load_config(args.config, overrides), args.run_dir).fit()
    if dist.is_initialized():
        dist.barrier()  # every rank done (rank 0 writes the last checkpoint) before any tears gloo down
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
