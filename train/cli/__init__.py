"""The training side's commands (`bandlift train`, `dataset`, `curve`, `eval`, `demo`), one module each,
named after the command, as in bandlift.rt.cli; the dispatcher imports only the one run."""
