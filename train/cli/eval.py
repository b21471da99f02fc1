"""`bandlift eval`: ViSQOL / LSD / LSD-HF / SNR / SI-SDR of the model and the baselines on reference
files, per category and overall; optionally a listening report (HTML)."""
from __future__ import annotations

import argparse
import importlib.util
import sys

from bandlift.rt.cli.errors import CLIError, missing_extra, write_json


def _cutoff(text: str):
    if text == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected Hz or 'auto', got {text!r}") from None


def configure(parser) -> None:
    from bandlift.train.conditions import CONDITIONS
    from bandlift.train.data.sources import CATEGORIES
    from bandlift.train.eval.baselines import BASELINES

    parser.add_argument("--data", nargs="+", required=True, metavar="DIR_OR_FILE",
                        help="full-band reference files, folders searched recursively, or .jsonl "
                             "manifests (rows with a 'path'; their category groups the results)")
    parser.add_argument("--split", default=None, metavar="NAME",
                        help="only the manifest rows of this split (e.g. test)")
    parser.add_argument("--input-rate", type=int, default=None, metavar="HZ",
                        help="rate of the low-band input made from each reference (soxr down)")
    parser.add_argument("--condition", default=None, metavar="NAME",
                        help="instead of --input-rate: the input a user chain delivers, through real "
                             "encoders: " + ", ".join(CONDITIONS) + " (each sets its rate and band)")
    parser.add_argument("--opus-bwe", default=None, metavar="PATH",
                        help="also judge Opus 1.6's neural BWE (its bwe_demo program: 16 kHz in, 48 kHz "
                             "out; inputs at other rates are resampled to 16 kHz first)")
    parser.add_argument("--input-cutoff", type=_cutoff, default=None, metavar="HZ|auto",
                        help="band limit of the input: brick-wall low-pass at HZ (needed where "
                             "--input-rate equals the rate a reference is judged at), or 'auto': tell "
                             "every method the "
                             "bandwidth measured on the input (default: input Nyquist)")
    parser.add_argument("--category", choices=CATEGORIES, default="other",
                        help="category of references that are not manifest rows (default: other)")
    parser.add_argument("--rate", type=int, default=None, metavar="HZ",
                        help="output and scoring rate (default: each reference's own rate, at most 48000; "
                             "with HZ, references below it are skipped)")
    parser.add_argument("--model", default=None, metavar="PATH",
                        help="streaming ONNX model to evaluate (default: the shipped model, if any)")
    parser.add_argument("--no-model", action="store_true", help="evaluate the baselines only")
    parser.add_argument("--baselines", default=",".join(BASELINES), metavar="LIST",
                        help=f"comma-separated baselines (default: {','.join(BASELINES)}; '' for none)")
    parser.add_argument("--oracle", action="store_true",
                        help="also score ceilings with random phase above the cutoff: oracle_noise "
                             "(the reference's own high band, bin by bin: the SNR bound of any method "
                             "that cannot know the phase), oracle_envelope (its envelope in 16 bands "
                             "per ~21 ms frame), and that envelope split in two: oracle_level (each "
                             "frame's high-band level from the reference, noise_fill's shape) and "
                             "oracle_shape (the reference's shape at noise_fill's level), oracle_file_shape "
                             "(that shape averaged over the whole file)")
    parser.add_argument("--no-visqol", action="store_true", help="skip ViSQOL (~1 s per 5 s of audio and method)")
    parser.add_argument("--json", default=None, metavar="FILE", help="write all results as JSON")
    parser.add_argument("--png", default=None, metavar="DIR", help="write spectrogram comparisons (PNG)")
    parser.add_argument("--html", default=None, metavar="DIR",
                        help="write a listening report: DIR/index.html with players and spectrograms")
    parser.add_argument("--blind", action="store_true",
                        help="in the listening report, letters in a random order per file instead of "
                             "method names (the key is in the JSON)")
    parser.add_argument("--max-files", type=int, default=None, metavar="N", help="evaluate at most N files")
    parser.add_argument("--per-source", type=int, default=None, metavar="N",
                        help="of a manifest's rows (after --split), the first N of each source by path among "
                             "those ViSQOL can score (at least 1 s): a fixed, balanced subset")
    parser.add_argument("--seconds", type=float, default=None, metavar="S",
                        help="use the first S seconds of each file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _methods(args) -> dict:
    from bandlift.train.eval.baselines import BASELINES
    from bandlift.train.eval.evaluate import model_method

    methods = {}
    if args.model is not None and args.no_model:
        raise CLIError("--model and --no-model contradict each other")
    if not args.no_model:
        try:
            methods["model"] = model_method(args.model)
        except Exception as exc:  # ModelError, unsupported rate, engine not available ...
            if args.model is not None:
                raise CLIError(f"cannot use model {args.model}: {exc}") from exc
            print(f"note: no model evaluated (shipped model unavailable: {exc}); baselines only",
                  file=sys.stderr)
    names = [n.strip() for n in args.baselines.split(",") if n.strip()]
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise CLIError(f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
    methods.update((n, BASELINES[n]) for n in names)
    if args.opus_bwe is not None:
        from bandlift.train.eval.opus_bwe import OpusBWE

        methods["opus_bwe"] = OpusBWE(args.opus_bwe)
    if args.oracle:
        from bandlift.train.eval.baselines import ORACLES

        methods.update(ORACLES)
    if not methods:
        raise CLIError("nothing to evaluate: no model and no baselines")
    return methods


def run(args) -> int:
    from bandlift.train.eval.evaluate import EvalConfig, evaluate
    from bandlift.train.eval.results import format_table, to_json

    for module, needed in (("librosa", True), ("matplotlib", args.png or args.html),
                           ("visqol", not args.no_visqol)):  # the baselines' STFT, the plots, ViSQOL
        if needed and importlib.util.find_spec(module) is None:
            raise missing_extra("eval" if module == "librosa" else f"eval ({module})", "eval")
    if args.max_files is not None and args.max_files < 1:
        raise CLIError(f"--max-files must be at least 1, got {args.max_files}")
    if args.per_source is not None and args.per_source < 1:
        raise CLIError(f"--per-source must be at least 1, got {args.per_source}")
    if args.blind and not args.html:
        raise CLIError("--blind labels the listening report: give --html DIR too")
    if (args.input_rate is None) == (args.condition is None):
        raise CLIError("give either --input-rate HZ or --condition NAME")
    cfg = EvalConfig(input_rate=args.input_rate, input_cutoff=args.input_cutoff, rate=args.rate,
                     seconds=args.seconds, max_files=args.max_files, split=args.split, per_source=args.per_source,
                     visqol=not args.no_visqol, category=args.category, condition=args.condition)
    try:
        cfg.check()
        methods = _methods(args)
        report = None
        if args.html:
            from bandlift.train.eval.report import ListeningReport

            report = ListeningReport(args.html, blind=args.blind)
        results = evaluate(args.data, methods, cfg, png_dir=args.png, progress=not args.quiet,
                           on_file=report.add if report else None)
        if report:
            results["listening"] = report.write(results)
    except OSError as exc:  # the plots or the listening report
        raise CLIError(f"cannot write {exc.filename or ''}: {exc.strerror or exc}") from exc
    print(format_table(results))
    if args.json:
        write_json(args.json, to_json(results))
        print(f"wrote {args.json}")
    if args.png:
        print(f"wrote {len(results['files'])} spectrogram comparison(s) to {args.png}")
    if args.html:
        print(f"wrote the listening report {results['listening']['html']}")
    return 0
