"""Checkpoints: read as tensors and plain data only (``torch.load(weights_only=True)``: a checkpoint from
someone else cannot run code), and the generator rebuilt from the config a checkpoint carries."""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from bandlift.rt.errors import BandliftError
from bandlift.train.model import Generator, GeneratorConfig


class CheckpointError(BandliftError, ValueError):
    """A checkpoint that is unreadable, not bandlift's, or holds more than tensors and plain data."""


def load_checkpoint(path: str | Path, device="cpu") -> dict:
    """A checkpoint's tensors and plain data; never unpickles code (weights_only=True)."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: not a plain bandlift checkpoint (refused to unpickle code objects)") from None
    except Exception as exc:  # noqa: BLE001 - a file that is no checkpoint fails anywhere in the unpickler
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict) or "model" not in ckpt["config"]:
        raise CheckpointError(f"{path}: not a bandlift checkpoint (no model config)")
    return ckpt


def load_generator(checkpoint: str | Path, which: str = "generator") -> Generator:
    ckpt = load_checkpoint(checkpoint)
    try:
        gen = Generator(GeneratorConfig.from_dict(ckpt["config"]["model"]))
        gen.load_state_dict(ckpt[which])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{checkpoint}: does not match this bandlift's generator: "
                              f"{str(exc).splitlines()[0]}") from None
    return gen.eval()
