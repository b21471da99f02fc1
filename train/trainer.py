"""GAN training: config file -> run folder with checkpoints, metrics CSV, best model; resumable; DDP.

The run folder holds ``config.yaml`` (a copy), ``last.pt`` (written every ``ckpt_every`` steps and on
exit), ``best.pt`` (lowest validation LSD) and ``metrics.csv``. Checkpoints carry the generator's
constructor arguments, so ``load_generator(path)`` rebuilds the model without the config file.
Multi-process: launch with ``torchrun --nproc_per_node N -m bandlift.train.trainer --config FILE``
(gloo on CPU, nccl on GPU); each rank draws different clips.
"""
from __future__ import annotations

import argparse
import copy
import csv
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from bandlift.train.losses import (
    discriminator_loss,
    feature_loss,
    generator_loss,
    lsd_torch,
    multi_resolution_stft_loss,
)
from bandlift.train.model import Discriminators, Generator, GeneratorConfig, count_params

DEFAULTS: dict = {
    "model": GeneratorConfig().to_dict(),
    "data": {"manifest": None, "seconds": 0.5, "batch_size": 8, "workers": 1, "valid_clips": 32,
             "source_balance": 0.0},
    "train": {
        "steps": 20000, "lr": 2e-4, "lr_disc": 2e-4, "betas": [0.8, 0.99], "gan_start": 5000,
        "ckpt_every": 250, "valid_every": 500, "log_every": 25, "seed": 0, "threads": 1,
        "max_minutes": None, "init": None,
    },
    "loss": {"stft": 10.0, "lsd": 0.0, "feature": 2.0, "adversarial": 1.0, "ffts": [256, 512, 1024, 2048]},
}


def merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None, overrides: dict | None = None) -> dict:
    user = yaml.safe_load(Path(path).read_text()) if path else {}
    return merge(merge(DEFAULTS, user or {}), overrides or {})


def lowpass_at(y, ceiling_hz, rate: int):
    """Zero each clip's spectrum above its ceiling (clips with a ceiling near Nyquist pass unchanged).

    A lossy file's target is empty above its measured bandwidth; comparing the generator's output there
    would teach it to leave that band empty for every input. Cutting both sides at the ceiling leaves
    the generator free above it, so only the band the reference really has teaches it.
    """
    spec = torch.fft.rfft(y, dim=-1)
    freqs = torch.fft.rfftfreq(y.shape[-1], 1.0 / rate).to(y.device)
    keep = (freqs[None, :] <= ceiling_hz[:, None]) | (ceiling_hz[:, None] >= 0.98 * rate / 2)
    return torch.fft.irfft(spec * keep, n=y.shape[-1], dim=-1)


def load_generator(checkpoint: str | Path, which: str = "generator") -> Generator:
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    gen = Generator(GeneratorConfig(**ckpt["config"]["model"]))
    gen.load_state_dict(ckpt[which])
    return gen.eval()


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
        torch.set_num_threads(int(config["train"]["threads"]))
        torch.manual_seed(int(config["train"]["seed"]) + self.rank)

        self.gen = Generator(GeneratorConfig(**config["model"])).to(self.device)
        self.disc = Discriminators().to(self.device)
        tcfg = config["train"]
        self.opt_g = torch.optim.AdamW(self.gen.parameters(), tcfg["lr"], betas=tcfg["betas"])
        self.opt_d = torch.optim.AdamW(self.disc.parameters(), tcfg["lr_disc"], betas=tcfg["betas"])
        self.step = 0
        self.skipped_steps = 0
        self.best_lsd = math.inf
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        if not self._resume() and tcfg.get("init"):
            self._init_from(tcfg["init"])
        if self.distributed:
            self.gen_ddp = DistributedDataParallel(self.gen)
            self.disc_ddp = DistributedDataParallel(self.disc)
        else:
            self.gen_ddp, self.disc_ddp = self.gen, self.disc

    # ------------------------------------------------------------------ checkpoints
    def _resume(self) -> bool:
        last = self.run_dir / "last.pt"
        if not last.exists():
            return False
        ckpt = torch.load(last, map_location=self.device, weights_only=False)
        self.gen.load_state_dict(ckpt["generator"])
        self.disc.load_state_dict(ckpt["discriminators"])
        self.opt_g.load_state_dict(ckpt["opt_g"])
        self.opt_d.load_state_dict(ckpt["opt_d"])
        self.step, self.best_lsd = ckpt["step"], ckpt["best_lsd"]
        if self.rank == 0:
            print(f"resumed from {last} at step {self.step} (best valid LSD {self.best_lsd:.3f})")
        return True

    def _init_from(self, checkpoint):
        """Fine-tuning: start from another run's weights (generator, and discriminators when the
        checkpoint has them) with fresh optimisers, step 0 and this run's schedule."""
        ckpt = torch.load(checkpoint, map_location=self.device, weights_only=False)
        theirs, ours = GeneratorConfig(**ckpt["config"]["model"]), GeneratorConfig(**self.cfg["model"])
        if theirs != ours:
            raise ValueError(f"train.init {checkpoint}: its model config {theirs} differs from this run's {ours}")
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
            "step": self.step, "best_lsd": self.best_lsd, "config": self.cfg,
            "params": count_params(self.gen), "world_size": self.world,
        }
        tmp = self.run_dir / (name + ".tmp")
        torch.save(ckpt, tmp)
        tmp.replace(self.run_dir / name)  # atomic: an interruption never leaves a torn checkpoint

    # ------------------------------------------------------------------ data
    def _loaders(self):
        from bandlift.train.data_dataset import ClipDataset

        dcfg = self.cfg["data"]
        seed = int(self.cfg["train"]["seed"]) * 1000 + self.rank + 7919 * self.step
        train = ClipDataset(dcfg["manifest"], "train", seconds=dcfg["seconds"], seed=seed,
                            source_balance=dcfg.get("source_balance", 0.0))
        loader = torch.utils.data.DataLoader(
            train, batch_size=dcfg["batch_size"], num_workers=dcfg["workers"], shuffle=True,
            drop_last=True, persistent_workers=dcfg["workers"] > 0,
        )
        valid = ClipDataset(dcfg["manifest"], "valid", seconds=2.0, seed=1234, length=dcfg["valid_clips"])
        return loader, valid

    def validate(self, valid) -> float:
        self.gen.eval()
        lsds = []
        with torch.no_grad():
            for i in range(len(valid)):
                item = valid[i]
                x = item["input"].to(self.device)[None]
                cutoff = (item["cutoff"] / (self.cfg["model"]["sample_rate"] / 2)).reshape(1).to(self.device)
                y = lowpass_at(self.gen(x, cutoff), item["ceiling"].reshape(1).to(self.device),
                               self.cfg["model"]["sample_rate"])
                lsds.append(float(lsd_torch(y, item["target"].to(self.device)[None])))
        self.gen.train()
        return float(np.mean(lsds))

    # ------------------------------------------------------------------ loop
    def train_step(self, batch) -> dict:
        tcfg, lcfg = self.cfg["train"], self.cfg["loss"]
        x = batch["input"].to(self.device)
        target = batch["target"].to(self.device)
        cutoff = batch["cutoff"].to(self.device) / (self.cfg["model"]["sample_rate"] / 2)
        y = self.gen_ddp(x, cutoff)
        if "ceiling" in batch:  # lossy references: judge only the band they really have
            y = lowpass_at(y, batch["ceiling"].to(self.device), self.cfg["model"]["sample_rate"])
        use_gan = self.step >= tcfg["gan_start"]
        scale = 0.55 + 0.45 * math.cos(math.pi * min(1.0, self.step / tcfg["steps"]))  # cosine to 10%
        for opt, key in ((self.opt_g, "lr"), (self.opt_d, "lr_disc")):
            for group in opt.param_groups:
                group["lr"] = tcfg[key] * scale
        logs = {}
        if use_gan:  # discriminators judge a random crop: most of a GAN step's cost on CPU
            n = min(y.shape[-1], int(self.cfg["data"].get("disc_seconds", 0.25) * self.cfg["model"]["sample_rate"]))
            start = int(torch.randint(0, y.shape[-1] - n + 1, ()))
            y_d, target_d = y[..., start:start + n], target[..., start:start + n]
            self.opt_d.zero_grad(set_to_none=True)
            loss_d = discriminator_loss(self.disc_ddp(target_d), self.disc_ddp(y_d.detach()))
            loss_d.backward()
            if self._finite_grads(self.disc):
                self.opt_d.step()
            logs["loss_d"] = loss_d.item()
        self.opt_g.zero_grad(set_to_none=True)
        loss_stft = multi_resolution_stft_loss(y, target, ffts=lcfg["ffts"])
        loss_g = lcfg["stft"] * loss_stft
        if lcfg.get("lsd"):  # the evaluation's own metric (log10 power, 1e-8 floor) as a loss term
            loss_lsd = lsd_torch(y, target, eps=1e-6).mean()
            loss_g = loss_g + lcfg["lsd"] * loss_lsd
            logs["loss_lsd"] = loss_lsd.item()
        if use_gan:
            fake = self.disc_ddp(y_d)
            with torch.no_grad():
                real = self.disc_ddp(target_d)
            loss_adv, loss_fm = generator_loss(fake), feature_loss(real, fake)
            loss_g = loss_g + lcfg["adversarial"] * loss_adv + lcfg["feature"] * loss_fm
            logs.update(loss_adv=loss_adv.item(), loss_fm=loss_fm.item())
        loss_g.backward()
        if self._finite_grads(self.gen):
            torch.nn.utils.clip_grad_norm_(self.gen.parameters(), 10.0)
            self.opt_g.step()
        logs.update(loss_g=loss_g.item(), loss_stft=loss_stft.item())
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
        loader, valid = self._loaders()
        deadline = time.time() + 60 * tcfg["max_minutes"] if tcfg.get("max_minutes") else None
        metrics_path = self.run_dir / "metrics.csv"
        fields = ["step", "time", "loss_g", "loss_stft", "loss_lsd", "loss_adv", "loss_fm", "loss_d", "valid_lsd", "skipped"]
        bar = tqdm(total=tcfg["steps"], initial=self.step, disable=self.rank != 0, desc="train", unit="step")
        started = time.time()
        try:
            while self.step < tcfg["steps"]:
                for batch in loader:
                    logs = self.train_step(batch)
                    self.step += 1
                    bar.update(1)
                    row = None
                    if self.step % tcfg["log_every"] == 0:
                        row = {"step": self.step, "time": round(time.time() - started, 1), **logs,
                               "skipped": self.skipped_steps}
                        bar.set_postfix(stft=f"{logs['loss_stft']:.3f}")
                    if self.step % tcfg["valid_every"] == 0 or self.step == tcfg["steps"]:
                        lsd = self.validate(valid) if self.rank == 0 else math.inf
                        row = {**(row or {"step": self.step, "time": round(time.time() - started, 1), **logs}),
                               "valid_lsd": round(lsd, 4)}
                        if lsd < self.best_lsd:
                            self.best_lsd = lsd
                            self.save("best.pt")
                    if row is not None and self.rank == 0:
                        new = not metrics_path.exists()
                        if not new:  # a resumed run keeps its file's columns
                            with metrics_path.open() as fh:
                                fields = next(csv.reader(fh), fields) or fields
                        with metrics_path.open("a", newline="") as fh:
                            writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
                            if new:
                                writer.writeheader()
                            writer.writerow(row)
                    if self.step % tcfg["ckpt_every"] == 0:
                        self.save()
                    if self.step >= tcfg["steps"] or (deadline and time.time() > deadline):
                        break
                if deadline and time.time() > deadline:
                    break
        finally:
            self.save()
            bar.close()
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
    overrides = {"data": {}, "train": {}}
    if args.manifest:
        overrides["data"]["manifest"] = args.manifest
    if args.steps:
        overrides["train"]["steps"] = args.steps
    Trainer(load_config(args.config, overrides), args.run_dir).fit()
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
