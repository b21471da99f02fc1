"""Options several commands share: the model, its execution provider and threads."""
from __future__ import annotations

PROVIDERS = ["auto", "cpu", "cuda"]


def add_model_options(p, *, provider_default: str | None, provider_help: str,
                      threads_help: str = "ONNX Runtime intra-op threads (default 1)") -> None:
    p.add_argument("--model", help="streaming ONNX model (default: the shipped model)")
    p.add_argument("--provider", choices=PROVIDERS, default=provider_default, help=provider_help)
    p.add_argument("--threads", type=int, default=1, help=threads_help)
