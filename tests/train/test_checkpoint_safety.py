"""A checkpoint from someone else must not run code: checkpoints load with torch.load(weights_only=True)."""
import pytest

torch = pytest.importorskip("torch")


class _Payload:
    """Unpickling this calls a function of the attacker's choice (here: writing a marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.xfail(strict=True, reason="train/trainer.py still loads with weights_only=False (issue #11 "
                   "item 6, the lead's change); remove this marker when it lands")
def test_malicious_checkpoint_does_not_run(tmp_path):
    from bandlift.train.trainer import load_generator

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"config": {"model": {}}, "generator": _Payload(marker)}, evil)
    with pytest.raises(Exception):
        load_generator(evil)
    assert not marker.exists(), "loading the checkpoint ran the attacker's code"
