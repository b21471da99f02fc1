"""bandlift.train.eval: evaluation (metrics, baselines, the eval library, plots) and the `eval`/`demo`
commands. numpy/scipy/soxr; librosa and matplotlib (the [eval] extra) only where a function needs them.
Never torch; the engine (`bandlift.rt`) never imports it."""
