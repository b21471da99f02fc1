"""Training end to end on a small corpus: config copy, checkpoints, resume, validation, DDP (gloo)."""
import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

torch = pytest.importorskip("torch")

from bandlift.rt.cli import main  # noqa: E402

TINY = {
    "model": {"channels": 16, "dilations": [1, 2, 4]},
    "data": {"seconds": 0.25, "batch_size": 2, "workers": 0, "valid_clips": 2, "visqol_clips": 1,
             "visqol_seconds": 1.0},
    "train": {"gan_start": 3, "valid_every": 3, "ckpt_every": 2, "log_every": 1, "lr": 1e-3},
}


def music_like(rng, seconds, sr):
    """Harmonic notes with decaying partials up to 20 kHz plus noisy transients: broadband, real-ish."""
    t = np.arange(int(seconds * sr)) / sr
    y = np.zeros_like(t)
    for start in np.arange(0, seconds, 0.25):
        f0 = rng.uniform(110, 880)
        env = np.where(t >= start, np.exp(-(t - start) * 6), 0)
        for k in range(1, int(20000 / f0)):
            y += env * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.28)) / k
        y += env * rng.standard_normal(len(t)) * 0.05 * np.exp(-(t - start) * 40)
    return (0.3 * y / np.max(np.abs(y))).astype(np.float32)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    for i in range(6):
        sf.write(root / f"clip{i}.flac", music_like(rng, 1.5, 44100), 44100)
    dest = tmp_path_factory.mktemp("data")
    assert main(["dataset", "folder", str(root), "--dest", str(dest), "--no-progress"]) == 0
    path = dest / "manifest.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert len(rows) == 6
    for i, row in enumerate(sorted(rows, key=lambda r: r["path"])):  # 6 files: make every split non-empty
        row["split"] = (["train"] * 4 + ["valid", "test"])[i]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_config(tmp_path, manifest):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "data": {**TINY["data"], "manifest": str(manifest)}}))
    return cfg


def test_train_checkpoints_resume_and_export(tmp_path, manifest):
    run = tmp_path / "run"
    cfg = write_config(tmp_path, manifest)
    assert main(["train", "--config", str(cfg), "--run-dir", str(run), "--steps", "6"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["channels"] == 16
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["step"] == 6 and ckpt["config"]["model"]["channels"] == 16
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    lsds = [float(r["valid_lsd"]) for r in rows if r["valid_lsd"]]
    assert len(lsds) == 2 and all(np.isfinite(lsds))
    assert all(r["loss_d"] for r in rows[3:]) and not rows[2]["loss_d"]  # GAN after 3 steps
    assert (run / "best.pt").exists()

    # an interrupted run resumes where it stopped
    before = ckpt["generator"]["out.weight"].clone()
    out = tmp_path / "m.onnx"
    assert main(["train", "--config", str(cfg), "--run-dir", str(run), "--steps", "8",
                 "--export", str(out)]) == 0
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["step"] == 8
    assert not torch.equal(ckpt["generator"]["out.weight"], before)
    assert [int(r["step"]) for r in csv.DictReader((run / "metrics.csv").open())][-2:] == [7, 8]
    assert out.stat().st_size > 10_000


def test_the_envelope_recipe_trains_its_band_losses(tmp_path, manifest):
    """train/envelope.yaml's model and losses (plus the dynamics and NSIM terms) on the tiny corpus: the band
    losses are logged, finite, and move the zero-initialised correction away from the prior."""
    recipe = yaml.safe_load((Path(__file__).parents[2] / "train" / "envelope.yaml").read_text())
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {**TINY["model"], **recipe["model"]}, "data": {**TINY["data"], "manifest": str(manifest)},
        "train": {**TINY["train"], "gan_start": 100}, "loss": {**recipe["loss"], "dynamics": 1.0, "nsim": 20.0}}))
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--run-dir", str(run), "--steps", "3"]) == 0
    judged, *rows = list(csv.DictReader((run / "metrics.csv").open()))
    # a prior model is judged before its first step: the DSP baseline it starts as is best.pt's first candidate
    assert judged["step"] == "0" and judged["loss_env"] == "" and 1.0 <= float(judged["valid_visqol"]) <= 5.0
    assert rows and all(np.isfinite(float(r["loss_env"])) and 0 <= float(r["loss_dyn"]) <= 2 for r in rows)
    assert all(0 < float(r["loss_nsim"]) <= 2 for r in rows)  # 1 - NSIM: structure may be negative
    weight = torch.load(run / "last.pt", weights_only=True)["generator"]["out.weight"]
    assert weight.shape[0] == 2 * recipe["model"]["envelope_bands"] and weight.abs().sum() > 0


def test_best_checkpoint_is_picked_by_visqol_and_anew_when_the_valid_split_changes(tmp_path, manifest, capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", str(write_config(tmp_path, manifest)), "--run-dir", str(run), "--steps", "3"]) == 0
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    score = float(rows[-1]["valid_visqol"])
    assert 1.0 <= score <= 5.0
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["best_score"][0] == pytest.approx(score, abs=1e-3) and best["valid_key"]
    out = capsys.readouterr()
    assert "picks anew" not in out.out
    # stderr is no terminal here: no bar (no carriage returns in a log), one line per validation instead
    assert "\r" not in out.err and f"step 3/3: stft {float(rows[-1]['loss_stft']):.3f}, valid ViSQOL {score:.3f}" in out.out

    # the same run resumed on a manifest whose valid split differs: old scores do not compare
    moved = tmp_path / "moved.jsonl"
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    for row in lines:
        row["split"] = "valid" if row["split"] == "test" else row["split"]
    moved.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert main(["train", "--config", str(write_config(tmp_path, moved)), "--run-dir", str(run), "--steps", "6"]) == 0
    assert "picks anew" in capsys.readouterr().out
    assert torch.load(run / "best.pt", weights_only=True)["valid_key"] != best["valid_key"]


def test_a_run_that_skips_updates_says_so(tmp_path, manifest, capsys, monkeypatch):
    """A recipe whose gradients were NaN skipped 97 % of its updates for 15 000 steps with nothing but a
    CSV column to show for it: the validation line (and the bar) now say so."""
    from bandlift.train.trainer import Trainer

    def never_finite(self, module):
        self.skipped_steps += 1
        return False

    monkeypatch.setattr(Trainer, "_finite_grads", never_finite)
    assert main(["train", "--config", str(write_config(tmp_path, manifest)), "--run-dir", str(tmp_path / "run"),
                 "--steps", "3"]) == 0
    assert "updates skipped (non-finite gradients)" in capsys.readouterr().out


def test_validation_leaves_one_thread_for_torch_and_numba(tmp_path, manifest):
    """ViSQOL's numba loops beside torch's OpenMP pool: after a validation both stay at train.threads
    (at numba's default, a spinning pool thread per run left two runs on 2 cores at 0.05 steps/s)."""
    import numba

    from bandlift.train.trainer import Trainer, load_config

    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    trainer = Trainer(load_config(write_config(tmp_path, manifest)), tmp_path / "run")
    _, valid, perceptual = trainer._loaders()
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)  # as a library call might leave it
    trainer.validate(valid, perceptual)
    assert torch.get_num_threads() == 1 and numba.get_num_threads() == 1


@pytest.mark.parametrize("to", ["the trainer", "its process group"])
def test_sigterm_saves_the_run_where_it_stopped(tmp_path, manifest, to):
    """A session or job that ends with SIGTERM keeps its steps: last.pt is written on the way out, also
    when the signal reaches the data workers too (a session's end signals the whole group)."""
    import signal
    import time

    run = tmp_path / "run"
    cfg = tmp_path / "long.yaml"
    workers = 1 if to == "its process group" else TINY["data"]["workers"]
    cfg.write_text(yaml.safe_dump({**TINY, "data": {**TINY["data"], "manifest": str(manifest), "workers": workers},
                                   "train": {**TINY["train"], "ckpt_every": 10**6, "valid_every": 10**6}}))
    proc = subprocess.Popen([sys.executable, "-m", "bandlift.rt.cli", "train", "--config", str(cfg),
                             "--run-dir", str(run), "--steps", "100000"], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 240
    while time.time() < deadline and not ((run / "metrics.csv").exists() and len((run / "metrics.csv").read_text().splitlines()) > 3):
        time.sleep(0.2)
    assert not (run / "last.pt").exists()  # only the signal can have written it
    if to == "its process group":
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0].decode(errors="replace")
    assert proc.returncode == 130 and "Traceback" not in out, out[-2000:]
    logged = int(list(csv.DictReader((run / "metrics.csv").open()))[-1]["step"])
    assert torch.load(run / "last.pt", weights_only=True)["step"] >= logged >= 3


def test_train_without_data_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--run-dir", str(tmp_path / "r")]) == 2
    assert "--manifest" in capsys.readouterr().err


def test_ddp_two_cpu_processes(tmp_path, manifest):
    run = tmp_path / "ddp"
    cfg = write_config(tmp_path, manifest)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:  # a free port: a fixed one may still be in TIME_WAIT from a last run
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
         "-m", "bandlift.train.trainer", "--config", str(cfg), "--run-dir", str(run), "--steps", "4"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["step"] == 4 and ckpt["world_size"] == 2


def test_lowpass_at_ceiling_cuts_only_lossy_clips():
    from bandlift.train.losses import lowpass_at

    y = torch.randn(2, 4800)
    out = lowpass_at(y, torch.tensor([12000.0, 24000.0]), 48000)
    spec = torch.fft.rfft(out, dim=-1).abs()
    freqs = torch.fft.rfftfreq(4800, 1 / 48000)
    assert spec[0, freqs > 12000].max() < 1e-3 and spec[0, freqs < 11000].min() > 0
    assert torch.allclose(out[1], y[1], atol=1e-5)


def test_fine_tune_starts_from_another_runs_weights(tmp_path, manifest):
    cfg = write_config(tmp_path, manifest)
    base = tmp_path / "base"
    assert main(["train", "--config", str(cfg), "--run-dir", str(base), "--steps", "2"]) == 0
    start = torch.load(base / "last.pt", weights_only=True)

    from bandlift.train.trainer import Trainer, load_config

    config = load_config(cfg, {"train": {"init": str(base / "last.pt"), "steps": 2}})
    tuned = Trainer(config, tmp_path / "tuned")
    assert tuned.step == 0
    for name, value in tuned.gen.state_dict().items():
        assert torch.equal(value, start["generator"][name]), name

    # the fine-tune's own checkpoint wins on resume; a different architecture is refused
    tuned.fit()
    again = Trainer(config, tmp_path / "tuned")
    assert again.step == 2
    other = load_config(cfg, {"model": {"channels": 8}, "train": {"init": str(base / "last.pt")}})
    with pytest.raises(ValueError, match="differs"):
        Trainer(other, tmp_path / "other")
    assert main(["train", "--config", str(cfg), "--run-dir", str(tmp_path / "x"), "--init",
                 str(tmp_path / "missing.pt")]) == 2


def test_steps_0_saves_a_prior_recipes_untrained_start_and_refuses_other_recipes(tmp_path, manifest, capsys):
    """`--steps 0` with a prior recipe: its start, judged once, as best.pt and last.pt at step 0 (how the
    shipped model is made); with a recipe that has no prior there is nothing worth keeping: one clear line."""
    prior = tmp_path / "prior.yaml"
    prior.write_text(yaml.safe_dump({**TINY, "data": {**TINY["data"], "manifest": str(manifest)},
                                     "model": {**TINY["model"], "context_fft": 0, "gru": 0, "exciter": False,
                                               "envelope_bands": 8, "prior": True, "noise": True,
                                               "prior_tilt_s": 0.5, "correction_db": 12.0}}))
    assert main(["train", "--config", str(prior), "--run-dir", str(tmp_path / "start"), "--steps", "0"]) == 0
    best = torch.load(tmp_path / "start" / "best.pt", weights_only=True)
    assert best["step"] == 0 and torch.load(tmp_path / "start" / "last.pt", weights_only=True)["step"] == 0
    rows = list(csv.DictReader((tmp_path / "start" / "metrics.csv").open()))
    assert [r["step"] for r in rows] == ["0"] and float(rows[0]["valid_lsd"]) > 0
    assert not best["generator"]["out.weight"].any()  # the correction is still zero: the prior itself
    capsys.readouterr()
    plain = write_config(tmp_path, manifest)
    assert main(["train", "--config", str(plain), "--run-dir", str(tmp_path / "plain"), "--steps", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--steps 0" in err[0] and not (tmp_path / "plain" / "last.pt").exists()


def test_a_run_resumed_with_another_model_config_is_refused_naming_the_change(tmp_path, manifest, capsys):
    """A recipe changed under a run (here the prior's activity floor) would load its weights into a model
    that runs otherwise: the resume is refused in one line that names the key, and the run's files stay."""
    cfg = write_config(tmp_path, manifest)
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--run-dir", str(run), "--steps", "2"]) == 0
    kept = {name: (run / name).read_bytes() for name in ("last.pt", "config.yaml")}
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump({**yaml.safe_load(cfg.read_text()),
                                       "model": {**TINY["model"], "prior_active_db": -120.0}}))
    capsys.readouterr()
    assert main(["train", "--config", str(changed), "--run-dir", str(run), "--steps", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "prior_active_db -80.0 -> -120.0" in err[0] and "resuming" in err[0], err
    assert {name: (run / name).read_bytes() for name in kept} == kept


def test_lsd_loss_matches_the_metric_and_has_finite_gradients():
    from bandlift.train.eval import metrics
    from bandlift.train.losses import lsd_torch

    rng = np.random.default_rng(0)
    ref = rng.standard_normal(24000).astype(np.float32) * 0.1
    est = (ref + 0.05 * rng.standard_normal(24000)).astype(np.float32)
    value = float(lsd_torch(torch.from_numpy(est)[None], torch.from_numpy(ref)[None]))
    assert value == pytest.approx(metrics.lsd(ref, est, 48000), rel=1e-4)

    silent = torch.zeros(1, 24000, requires_grad=True)  # both at the floor: a zero-distance frame
    lsd_torch(silent, torch.zeros(1, 24000), eps=1e-6).sum().backward()
    assert torch.isfinite(silent.grad).all()


def test_nsim_map_is_visqols_own():
    """The differentiable similarity map equals visqol-python's NSIM on the same neurogram patches."""
    from visqol.nsim import measure_patch_similarity

    from bandlift.train.losses import nsim_map

    rng = np.random.default_rng(1)
    ref = 30 + 5 * rng.standard_normal((32, 30))
    deg = ref + 2 * rng.standard_normal((32, 30)) + 1.0
    ours = nsim_map(torch.tensor(ref)[None], torch.tensor(deg)[None])[0].numpy()
    theirs = measure_patch_similarity(ref, deg)
    assert np.allclose(ours.mean(1), theirs.freq_band_means, atol=1e-4)


def test_neurogram_follows_visqols_gammatone_spectrogram():
    """Band levels of the FFT-domain gammatone approximation agree with visqol's IIR filter bank (in
    its units, 10*log10 of a band's RMS) where a test signal has energy."""
    from visqol.analysis_window import AnalysisWindow
    from visqol.audio_utils import AudioSignal
    from visqol.gammatone import GammatoneSpectrogramBuilder

    from bandlift.train.losses import gammatone_weights, neurogram

    rate = 48000
    rng = np.random.default_rng(2)
    t = np.arange(rate) / rate
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(rate) * (1 + np.sin(2 * np.pi * 3 * t))
    theirs = GammatoneSpectrogramBuilder(32, 50.0).build(AudioSignal(x, rate), AnalysisWindow(rate, 0.25)).data
    theirs = 10 * np.log10(np.abs(theirs))
    weights = gammatone_weights(4096, rate)
    ours = neurogram(torch.tensor(x, dtype=torch.float32)[None], rate, weights[0].float())[0].numpy()
    frames = min(ours.shape[1], theirs.shape[1])
    err = np.abs(ours[:, :frames] - theirs[:, :frames])
    assert np.median(err) < 0.5 and np.percentile(err, 95) < 1.5


def test_neurogram_similarity_loss_ranks_a_matched_envelope_above_a_louder_one():
    """Noise with the reference's high band scores better than the same noise 12 dB too loud or a
    missing band; identical signals score 0; gradients are finite, also on digital silence."""
    from bandlift.train.losses import neurogram_similarity_loss

    rate, n = 48000, 24000
    rng = np.random.default_rng(3)
    low = torch.tensor(np.convolve(rng.standard_normal(n), np.ones(8) / 8, "same"), dtype=torch.float32)
    env = torch.tensor(np.abs(np.sin(np.pi * 4 * np.arange(n) / rate)), dtype=torch.float32)
    high = lambda seed: env * 0.02 * torch.tensor(  # noqa: E731 - white noise, high-passed by difference
        np.diff(np.random.default_rng(seed).standard_normal(n + 1)), dtype=torch.float32)
    ref = (low + high(4))[None]
    cutoff = torch.tensor([8000.0])

    def loss(est):
        return float(neurogram_similarity_loss(est, ref, cutoff, rate))

    assert loss(ref) == pytest.approx(0.0, abs=1e-6)
    matched = loss((low + high(5))[None])
    assert matched < loss((low + 4 * high(5))[None]) and matched < loss(low[None])
    for est, target in ((ref.clone(), ref), (torch.zeros(1, n), torch.zeros(1, n))):
        est.requires_grad_(True)
        neurogram_similarity_loss(est, target, cutoff, rate).backward()
        assert torch.isfinite(est.grad).all()


def test_shipped_configs_agree_so_the_fine_tune_can_start_from_the_base_run():
    from pathlib import Path

    from bandlift.train.layers import count_params
    from bandlift.train.model import Generator, GeneratorConfig
    from bandlift.train.trainer import DEFAULTS, load_config

    train_dir = Path(__file__).resolve().parents[2] / "train"
    base, tune = (load_config(train_dir / name) for name in ("default.yaml", "finetune.yaml"))
    assert base["model"] == tune["model"] == GeneratorConfig().to_dict() == DEFAULTS["model"]
    assert count_params(Generator(GeneratorConfig.from_dict(base["model"]))) == 232_962  # the default's size
    assert tune["loss"]["lsd"] > 0 and tune["train"]["gan_start"] < tune["train"]["steps"]
    # the GAN is active for most of the run, not its last 10 %
    assert base["train"]["gan_start"] <= 0.2 * base["train"]["steps"]
    ablations = {name: load_config(train_dir / f"ablation-{name}.yaml") for name in ("no-gan", "no-context")}
    assert ablations["no-gan"]["train"]["gan_start"] > ablations["no-gan"]["train"]["steps"]
    assert ablations["no-context"]["model"] == {**base["model"], "context_fft": 0, "gru": 0, "exciter": False}
    for cfg in ablations.values():  # each ablation changes one thing
        assert cfg["loss"] == base["loss"]
        assert cfg["data"] == base["data"]
    # the perceptual recipe's ablations: without the adversary, then also without the long context
    perceptual = load_config(train_dir / "perceptual.yaml")
    no_gan, no_context = (load_config(train_dir / f"ablation-perceptual-{n}.yaml") for n in ("no-gan", "no-context"))
    assert perceptual["loss"]["nsim"] > 0 and perceptual["train"]["gan_start"] == 0
    assert no_gan["model"] == perceptual["model"] and no_gan["data"] == perceptual["data"]
    assert no_gan["train"]["gan_start"] > no_gan["train"]["steps"] == perceptual["train"]["steps"]
    assert no_gan["loss"] == {**perceptual["loss"], "feature": DEFAULTS["loss"]["feature"],
                              "adversarial": DEFAULTS["loss"]["adversarial"]}  # unused without the adversary
    assert no_context["model"] == {**no_gan["model"], "context_fft": 0, "gru": 0, "exciter": False}
    assert {k: no_context[k] for k in ("data", "train", "loss")} == {k: no_gan[k] for k in ("data", "train", "loss")}
    for recipe in ("robust", "robust-fft1024"):  # the never-below-DSP recipes, each with its ablation
        robust, robust_no_gan = (load_config(train_dir / f"{n}.yaml") for n in (recipe, f"ablation-{recipe}-no-gan"))
        assert robust["model"]["noise"] and robust["data"]["condition_prob"] > 0 and robust["train"]["gan_start"] == 0
        assert {k: robust_no_gan[k] for k in ("model", "data")} == {k: robust[k] for k in ("model", "data")}
        assert robust_no_gan["train"] == {**robust["train"], "gan_start": robust_no_gan["train"]["gan_start"]}
        assert robust_no_gan["train"]["gan_start"] > robust_no_gan["train"]["steps"]
        assert robust_no_gan["loss"] == {**robust["loss"], "feature": DEFAULTS["loss"]["feature"],
                                         "adversarial": DEFAULTS["loss"]["adversarial"]}
    no_context_gan = load_config(train_dir / "ablation-perceptual-no-context-gan.yaml")
    assert no_context_gan["model"] == no_context["model"]
    assert {k: no_context_gan[k] for k in ("data", "train", "loss")} == {k: perceptual[k] for k in ("data", "train", "loss")}
    for path in train_dir.glob("ablation-*.yaml"):  # each holds only its differences from the recipe it names
        recipe = yaml.safe_load(path.read_text())
        assert recipe["parent"] and sum(len(v) for k, v in recipe.items() if k != "parent") <= 3, path.name


def test_a_recipe_names_its_parent_and_overrides_its_keys(tmp_path, capsys):
    from bandlift.train.trainer import DEFAULTS, load_config

    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "base.yaml").write_text("train:\n  steps: 500\n  lr: 0.001\nloss:\n  lsd: 2.0\n")
    (tmp_path / "mid.yaml").write_text("parent: base/base.yaml\ntrain:\n  steps: 700\n")
    (tmp_path / "child.yaml").write_text("parent: mid.yaml\nloss:\n  nsim: 1.0\n")
    config = load_config(tmp_path / "child.yaml", {"train": {"seed": 3}})
    assert config["train"] == {**DEFAULTS["train"], "steps": 700, "lr": 0.001, "seed": 3}
    assert config["loss"] == {**DEFAULTS["loss"], "lsd": 2.0, "nsim": 1.0} and "parent" not in config
    (tmp_path / "base" / "base.yaml").write_text("parent: ../child.yaml\n")  # a cycle
    (tmp_path / "orphan.yaml").write_text("parent: gone.yaml\n")
    for recipe, message in (("child.yaml", "in a cycle"), ("orphan.yaml", "parent gone.yaml: not a regular file")):
        assert main(["train", "--config", str(tmp_path / recipe), "--run-dir", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_loss_terms_come_from_one_table():
    """Each term's weight is a recipe key with its default, and its column is in metrics.csv's header."""
    from bandlift.train.losses import LOSS_TERMS
    from bandlift.train.trainer import DEFAULTS

    assert list(DEFAULTS["loss"]) == [term.name for term in LOSS_TERMS] + ["ffts"]
    assert len({term.column for term in LOSS_TERMS}) == len(LOSS_TERMS)


def _trainer(tmp_path, manifest, **sections):
    from bandlift.train.recipes import merge
    from bandlift.train.trainer import Trainer, load_config

    config = merge(load_config(write_config(tmp_path, manifest)), sections)
    return Trainer(config, tmp_path / "run")


def test_both_networks_gradients_are_clipped_and_each_optimiser_has_its_schedule(tmp_path, manifest):
    from bandlift.train.trainer import GRAD_CLIP_NORM, LR_FLOOR

    trainer = _trainer(tmp_path, manifest, train={"gan_start": 0, "steps": 4, "lr": 1e-3, "lr_disc": 5e-4})
    train, _, _ = trainer._loaders()
    batch = next(iter(trainer._epoch_loader(train)))
    batch["target"] = batch["target"] * 1e4  # loud enough that both gradients pass the clip norm
    norms = {"generator": [], "discriminators": []}

    def record(name):  # the gradient each optimiser steps with
        def hook(opt, args, kwargs):
            grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
            norms[name].append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return hook

    trainer.opt_g.register_step_pre_hook(record("generator"))
    trainer.opt_d.register_step_pre_hook(record("discriminators"))
    for step in range(4):
        trainer.train_step(batch)
        trainer.step += 1
    assert all(len(n) == 4 for n in norms.values()), norms
    assert max(max(n) for n in norms.values()) <= GRAD_CLIP_NORM * (1 + 1e-5), norms
    # cosine from each recipe rate to LR_FLOOR of it at train.steps
    assert trainer.opt_g.param_groups[0]["lr"] == pytest.approx(1e-3 * LR_FLOOR)
    assert trainer.opt_d.param_groups[0]["lr"] == pytest.approx(5e-4 * LR_FLOOR)


def test_a_run_checkpointed_by_the_earlier_trainer_resumes(tmp_path, manifest):
    """docs/training/robust/last.pt (written before the loss table and the schedulers): its optimisers
    load, the schedules continue from its step, and a step trains and checkpoints."""
    import math
    import shutil

    from bandlift.train.checkpoints import load_checkpoint
    from bandlift.train.recipes import merge
    from bandlift.train.trainer import Trainer

    old = Path(__file__).resolve().parents[2] / "docs" / "training" / "robust" / "last.pt"
    (tmp_path / "run").mkdir()
    shutil.copy(old, tmp_path / "run" / "last.pt")
    ckpt = load_checkpoint(old)
    # its own 0.5 s clips: at 0.25 s this recipe's generator gradient is not finite (the step is skipped)
    config = merge(ckpt["config"], {"data": {**TINY["data"], "seconds": 0.5, "manifest": str(manifest)}})
    trainer = Trainer(config, tmp_path / "run")
    step, tcfg = ckpt["step"], config["train"]
    assert trainer.step == step > 0
    for opt, key in ((trainer.opt_g, "lr"), (trainer.opt_d, "lr_disc")):  # the earlier trainer's formula
        assert opt.param_groups[0]["lr"] == pytest.approx(tcfg[key] * (0.55 + 0.45 * math.cos(math.pi * step / tcfg["steps"])))
    train, _, _ = trainer._loaders()
    before = [p.detach().clone() for p in trainer.gen.parameters()]
    logs = trainer.train_step(next(iter(trainer._epoch_loader(train))))
    trainer.step += 1
    assert all(math.isfinite(v) for v in logs.values()) and "loss_adv" in logs and "loss_nsim" in logs
    assert trainer.skipped_steps == 0, trainer.skipped_steps
    assert any(not torch.equal(p, b) for p, b in zip(trainer.gen.parameters(), before))
    trainer.save()
    resumed = Trainer(config, tmp_path / "run")
    assert resumed.step == step + 1
    assert torch.equal(resumed.gen.out.weight, trainer.gen.out.weight)


def test_unknown_model_keys_are_refused():
    from bandlift.train.model import GeneratorConfig

    with pytest.raises(ValueError, match="unknown model config key"):
        GeneratorConfig.from_dict({"chanels": 8})
    for bad in ({"channels": 10**9}, {"dilations": [1] * 10**6}, {"gru": -1}, {"n_fft": "128"}, {"arch": "x"},
                {"prior": True, "prior_tilt_s": 0.01}, {"noise": True}, {"prior": True, "correction_db": -3}):
        with pytest.raises(ValueError, match="model\\."):  # refused before any weight is allocated
            GeneratorConfig.from_dict(bad)


def test_a_malicious_checkpoint_does_not_run(tmp_path, manifest):
    """A .pt whose pickle calls os.system is refused by every loader (weights_only=True)."""
    from bandlift.train.checkpoints import load_checkpoint, load_generator

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"generator": Evil(), "config": {"model": {}}}, path)
    for load in (load_checkpoint, load_generator):
        with pytest.raises(ValueError, match="refused to unpickle"):
            load(path)
    assert main(["export", str(path), "-o", str(tmp_path / "x.onnx")]) == 2
    run_dir = tmp_path / "run"  # resuming from a planted last.pt
    run_dir.mkdir()
    (run_dir / "last.pt").write_bytes(path.read_bytes())
    assert main(["train", "--config", str(write_config(tmp_path, manifest)), "--run-dir", str(run_dir)]) == 2
    assert not marker.exists()


def test_curve_writes_a_runs_validation_curve_as_csv_and_png(tmp_path, capsys):
    for name, scores in (("robust", [(0, 3.0, 0.9), (500, 3.2, 0.85)]), ("no-gan", [(0, 3.0, 0.9), (500, 3.1, 0.8)])):
        run = tmp_path / name
        run.mkdir()
        lines = ["step,time,loss_g,valid_lsd,valid_visqol"]
        lines += [f"{step},0,1.0,{lsd},{visqol}" for step, visqol, lsd in scores] + ["250,0,1.0,,"]
        (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    out_csv, out_png = tmp_path / "curve.csv", tmp_path / "curve.png"
    assert main(["curve", str(tmp_path / "robust"), str(tmp_path / "no-gan"), "--csv", str(out_csv),
                 "--png", str(out_png), "--baseline", "noise_fill=3.06"]) == 0
    assert "best ViSQOL 3.200 (LSD 0.850) at step 500" in capsys.readouterr().out
    rows = list(csv.reader(out_csv.open()))
    assert rows[0] == ["run", "step", "valid_visqol", "valid_lsd"] and len(rows) == 5  # rows without a validation left out
    assert rows[2] == ["robust", "500", "3.2", "0.85"]
    assert out_png.read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.csv").write_text("step,valid_lsd,valid_visqol\n10,,\n")
    assert main(["curve", str(tmp_path / "empty")]) == 2
    assert "no validation rows yet" in capsys.readouterr().err
