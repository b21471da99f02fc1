"""Options several commands share: the model, its execution provider and threads; the output rate."""
from __future__ import annotations

PROVIDERS = ["auto", "cpu", "cuda"]


def add_model_options(p, *, provider_default: str | None, provider_help: str,
                      threads_help: str = "ONNX Runtime intra-op threads (default 1)") -> None:
    p.add_argument("--model", help="streaming ONNX model (default: the shipped model)")
    p.add_argument("--provider", choices=PROVIDERS, default=provider_default, help=provider_help)
    p.add_argument("--threads", type=int, default=1, help=threads_help)


def add_output_rate_option(p, what: str = "output rate in Hz") -> None:
    """--rate: the rate written or played, 48 kHz (the model's) unless asked; the model's output is resampled."""
    p.add_argument("--rate", type=int, default=48000,
                   help=f"{what} (default 48000, the model's rate; e.g. 44100: the model's output is resampled)")
