"""`bandlift curve`: a training run's learning curve on its validation sources (ViSQOL and LSD by step)
as CSV and PNG, optionally beside other runs (an ablation at equal steps); no torch needed."""
from __future__ import annotations

import csv
import math
from pathlib import Path

from bandlift.rt.cli.errors import CLIError, missing_extra

COLUMNS = ("step", "valid_visqol", "valid_lsd")


def configure(parser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="training run folders (their metrics.csv)")
    parser.add_argument("--csv", default=None, metavar="FILE", help="write the validation rows (run, step, ViSQOL, LSD)")
    parser.add_argument("--png", default=None, metavar="FILE", help="plot ViSQOL and LSD by step")
    parser.add_argument("--baseline", action="append", default=[], metavar="NAME=VISQOL",
                        help="a horizontal line on the ViSQOL plot, e.g. noise_fill=3.06 (repeatable)")


def read_curve(run: Path) -> list[dict]:
    """The rows of a run's metrics.csv that carry a validation, as floats."""
    path = Path(run) / "metrics.csv"
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror or exc}") from None
    curve = []
    for row in rows:
        try:
            values = {key: float(row.get(key) or "nan") for key in COLUMNS}
        except ValueError:
            raise CLIError(f"{path}: not a metrics.csv of `bandlift train` (row {row!r:.80})") from None
        if math.isfinite(values["valid_visqol"]) or math.isfinite(values["valid_lsd"]):
            curve.append(values)
    if not curve:
        raise CLIError(f"{path}: no validation rows yet")
    return curve


def _baselines(pairs: list[str]) -> dict[str, float]:
    out = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            raise CLIError(f"--baseline wants NAME=VISQOL, not {pair!r}") from None
    return out


def run(args) -> int:
    baselines = _baselines(args.baseline)
    curves = {str(run): read_curve(Path(run)) for run in args.runs}
    for name, curve in curves.items():
        best = max(curve, key=lambda r: (r["valid_visqol"], -r["valid_lsd"]))
        print(f"{name}: {len(curve)} validations up to step {curve[-1]['step']:.0f}; best ViSQOL "
              f"{best['valid_visqol']:.3f} (LSD {best['valid_lsd']:.3f}) at step {best['step']:.0f}")
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["run", *COLUMNS])
            for name, curve in curves.items():
                writer.writerows([Path(name).name, int(r["step"]), r["valid_visqol"], r["valid_lsd"]] for r in curve)
        print(f"wrote {args.csv}")
    if args.png:
        try:
            import matplotlib
        except ImportError:
            raise missing_extra("curve --png (matplotlib)", "eval") from None
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
        for name, curve in curves.items():
            steps = [r["step"] for r in curve]
            top.plot(steps, [r["valid_visqol"] for r in curve], marker=".", label=Path(name).name)
            bottom.plot(steps, [r["valid_lsd"] for r in curve], marker=".", label=Path(name).name)
        for name, value in baselines.items():
            top.axhline(value, linestyle="--", color="grey")
            top.annotate(name, (0, value), textcoords="offset points", xytext=(2, 2), fontsize=8, color="grey")
        top.set_ylabel("validation ViSQOL")
        bottom.set_ylabel("validation LSD")
        bottom.set_xlabel("step")
        top.legend(fontsize=8)
        top.grid(alpha=0.3)
        bottom.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.png, dpi=100)
        plt.close(fig)
        print(f"wrote {args.png}")
    return 0
