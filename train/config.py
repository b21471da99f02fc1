"""The generator's constructor arguments (`GeneratorConfig`): what training recipes override,
checkpoints carry and export writes into the ONNX metadata, checked before any weight is allocated."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

MIN_TILT_S = 0.05  # prior_tilt_s: shortest time constant (a^-j stays finite in any exported block)


@dataclass
class GeneratorConfig:
    """The generator's constructor arguments: training YAML files override the defaults (the default
    recipe's), checkpoints store them, export writes them into the ONNX metadata (the shipped model's
    config is in its own metadata, `bandlift.config`)."""

    arch: str = "spectral"  # "spectral" (log-envelope x band replication) or "waveform"
    sample_rate: int = 48000
    frame: int = 32  # hop; blocks are multiples of it
    n_fft: int = 128  # spectral arch: synthesis window (its delay, n_fft - frame, is the model's latency)
    channels: int = 64
    kernel: int = 3
    dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 1, 2, 4, 8, 16])
    negative_slope: float = 0.1
    # Long causal analysis of the past for the conditioning path only (0 = off): a context_fft-sample
    # Hann window ending at the current frame, its lowest context_bins bins (1024/96 at 48 kHz: 47 Hz
    # resolution up to 4.5 kHz, the pitch and harmonics of any passband). Adds no latency.
    context_fft: int = 1024
    context_bins: int = 96
    gru: int = 64  # recurrent state over frames (its hidden size; 0 = off)
    # Second excitation beside band replication: the spectrum of |x|, whose harmonics continue the
    # passband's above the cutoff and keep transients sharp; the model mixes the two per bin.
    exciter: bool = True
    # Spectral arch: 0 = one log gain per bin; K > 0 = K band gains (equal in octaves from
    # ENVELOPE_LOW_HZ to Nyquist) interpolated across the bins: a smooth envelope, as the oracle's.
    envelope_bands: int = 0
    # Spectral arch: the predicted gains correct a DSP prior instead of starting from nothing: the
    # level of the passband's top octave (this frame) falling PRIOR_TILT_DB per octave above it, the
    # shaped noise-fill's envelope. With the output layer zeroed at init the generator starts as that
    # baseline and training moves it only where that helps.
    prior: bool = False
    # Spectral arch with prior: the causal noise-fill as the starting point. `noise` adds a third
    # excitation, fixed pseudo-random phasors (two tables of coprime lengths: a 43 s period at 48 kHz,
    # deterministic, so offline equals live), mixed per bin with the others and starting almost all
    # noise; `prior_tilt_s` > 0 replaces the fixed PRIOR_TILT_DB by the passband's own top-octave slope
    # averaged over active frames with this time constant (noise_fill's whole-file tilt, made causal),
    # and the level follows the top octave's power over the last PRIOR_LEVEL_FRAMES frames.
    noise: bool = False
    prior_tilt_s: float = 0.0
    # > 0 (with prior_tilt_s): the prior reads the top octave through a prior_fft-sample Hann window
    # ending at the current frame, as the offline noise-fill does (1024 at 48 kHz: 47 Hz bins resolve the
    # passband's harmonics): its level is the octave's mean dB (the noise-like floor between partials,
    # + the 2.51 dB of Gaussian noise), its slope a least-squares line. 0: the model's n_fft frames, the
    # octave's mean power. No added latency (docs/training/robust.md: 0.2-0.5 ViSQOL at step 0).
    prior_fft: int = 0
    # > 0: the learned correction of the prior is bounded to +-correction_db (tanh): a model that has
    # learned nothing that transfers stays near the DSP baseline it starts from.
    correction_db: float = 0.0
    # with prior_tilt_s: frames whose top octave is quieter than this (dB re a full-scale sine's bin power)
    # do not move the running slope. -80 (the first robust recipes) froze the slope through quiet material
    # (a decaying drum, a recording at -40 dBFS) at what its loud frames said; -120, the offline
    # noise-fill's silence floor, lets it follow them down to 16-bit dither (docs/training/robust.md).
    prior_active_db: float = -80.0
    # with prior_fft: the long window's level is read at its end, not its middle. The window's level lags
    # the passband by half its length (11 ms at 1024); the model's short frames say how the top octave moved
    # since: the level is scaled by their power over the last PRIOR_LEVEL_FRAMES frames against their power
    # weighted as the long window weights it (within +-20 dB). The floor between partials stays the long
    # window's; onsets and decays come 10 ms sooner (docs/training/robust.md, session 14).
    prior_fast_level: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GeneratorConfig":
        """From a checkpoint's or a YAML file's plain dict; unknown keys are an error, not ignored."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown model config key(s): {', '.join(sorted(unknown))}")
        config = cls(**data)
        config.check()
        return config

    def check(self) -> None:
        """Types and sane bounds, before anything is allocated (configs and checkpoints come from others)."""
        limits = {"sample_rate": (8000, 384000), "frame": (1, 4096), "n_fft": (2, 16384), "channels": (1, 1024),
                  "kernel": (1, 31), "context_fft": (0, 65536), "context_bins": (0, 32769), "gru": (0, 1024),
                  "envelope_bands": (0, 256), "prior_fft": (0, 65536)}
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"model.{name} must be an integer in {low}..{high}, not {value!r}")
        if (not isinstance(self.dilations, list) or not 1 <= len(self.dilations) <= 64
                or not all(isinstance(d, int) and 1 <= d <= 4096 for d in self.dilations)):
            raise ValueError(f"model.dilations must be 1-64 integers in 1..4096, not {self.dilations!r}")
        for name, (low, high) in {"prior_tilt_s": (MIN_TILT_S, 60.0), "correction_db": (0.0, 60.0)}.items():
            value = getattr(self, name)
            if (not isinstance(value, (int, float)) or isinstance(value, bool)
                    or not (value == 0 or low <= value <= high)):
                raise ValueError(f"model.{name} must be 0 (off) or a number in {low}..{high}, not {value!r}")
        if (not isinstance(self.prior_active_db, (int, float)) or isinstance(self.prior_active_db, bool)
                or not -200.0 <= self.prior_active_db <= 0.0):
            raise ValueError(f"model.prior_active_db must be a number in -200..0 (dB), not {self.prior_active_db!r}")
        if (self.noise or self.prior_tilt_s) and not (self.prior and self.arch == "spectral"):
            raise ValueError("model.noise and model.prior_tilt_s need model.prior: true (spectral arch)")
        if self.prior_fft and not (self.prior_tilt_s and self.noise and self.prior_fft % self.frame == 0
                                   and self.prior_fft >= self.n_fft):
            raise ValueError(f"model.prior_fft {self.prior_fft} needs model.prior_tilt_s and model.noise (its frame "
                             f"clock) and must be a multiple of frame {self.frame}, >= n_fft {self.n_fft}")
        if self.prior_fast_level is True and not self.prior_fft:
            raise ValueError("model.prior_fast_level needs model.prior_fft (the long window whose lag it removes)")
        for name in ("exciter", "prior", "noise", "prior_fast_level"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"model.{name} must be true or false, not {getattr(self, name)!r}")
        if self.arch not in ("spectral", "waveform"):
            raise ValueError(f"model.arch must be 'spectral' or 'waveform', not {self.arch!r}")
