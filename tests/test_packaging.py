"""What ships: the licence files in the wheel, and a help text for every command-line option."""
import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import platformdirs
import pytest

from bandlift.rt.cli import SUBCOMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_carries_the_licences(tmp_path):
    """setuptools' own build step (what a wheel is made of; building one would need the network)."""
    subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q", "egg_info", "-e",
                    str(tmp_path), "build_py", "-d", str(tmp_path / "lib")], cwd=ROOT, check=True,
                   capture_output=True)
    assets = tmp_path / "lib" / "bandlift" / "rt" / "assets"
    assert (assets / "LICENSE-example.txt").is_file() and (assets / "example.flac").is_file()
    sources = (tmp_path / "bandlift.egg-info" / "SOURCES.txt").read_text().split()
    assert "LICENSE" in sources  # the licence files go into the wheel's dist-info


def _parsers(parser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_option_has_a_help_text(command):
    if command in ("train", "export"):
        pytest.importorskip("torch")
    missing = [f"{p.prog} {a.dest}" for p in _parsers(build_parser(command)) for a in p._actions
               if a.help is None and not isinstance(a, argparse._SubParsersAction)]
    assert not missing


def test_the_jit_cache_goes_to_the_user_cache_dir_not_the_package(tmp_path):
    """numba's `.nbi/.nbc` files in the installed package's `__pycache__` outlive `pip uninstall` and
    shadow a later editable install (issue 22): they belong in the user's cache dir."""
    import numpy as np
    import soundfile as sf

    packages = [ROOT / name for name in ("rt", "train", "export")]
    before = {p: p.stat().st_mtime_ns for d in packages for p in d.rglob("*.nb[ic]")}
    sf.write(tmp_path / "in.wav", np.zeros(8000, np.float32), 16000)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    bandlift = str(Path(sys.executable).with_name("bandlift"))
    subprocess.run([bandlift, "upsample", str(tmp_path / "in.wav"), str(tmp_path / "out.wav")], env=env,
                   check=True, capture_output=True, timeout=300)
    subprocess.run([sys.executable, "-c", "import bandlift.rt.io.runner"], env=env, check=True,
                   capture_output=True, timeout=300)
    after = {p: p.stat().st_mtime_ns for d in packages for p in d.rglob("*.nb[ic]")}
    assert after == before  # nothing written into the package
    cached = {p.suffix for p in (tmp_path / "cache" / "bandlift" / "numba").rglob("*.nb[ic]")}
    assert cached == {".nbi", ".nbc"}


def _fresh_clone(dest: Path) -> Path:
    skip = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "runs",
                                  ".pytest_cache")

    def ignore(folder, names):  # a data/ folder at the top (the user's corpus), not train/data/
        return set(skip(folder, names)) | ({"data"} if Path(folder) == ROOT else set())

    shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


def test_the_readme_commands_in_order_in_one_fresh_venv(tmp_path):
    """The README's first command (`pip install .` and the demo), then the test command's install in the
    same venv, as a user would (issue 22: the demo's JIT cache in site-packages shadowed the editable
    install and broke even `bandlift --help`)."""
    from test_readme import setup_commands

    first, second = setup_commands()
    assert "pip install . && bandlift demo" in first and "pip install -q -e '.[train,eval,test]'" in second
    clone = _fresh_clone(tmp_path / "clone")
    venv = tmp_path / "venv"
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"),  # where the run's caches must go ...
               PIP_CACHE_DIR=platformdirs.user_cache_dir("pip"))  # ... but pip keeps the user's own cache
    env.pop("NUMBA_CACHE_DIR", None)
    env.pop("VIRTUAL_ENV", None)

    def run(*command, cwd=clone):
        result = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, (command, result.stdout[-2000:], result.stderr[-2000:])
        return result.stdout

    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "pip", "install", "-q", ".")
    run(venv / "bin" / "bandlift", "demo", "-o", tmp_path / "demo", cwd=tmp_path)
    run(venv / "bin" / "pip", "install", "-q", "-e", ".[train,eval,test]")
    assert "upsample" in run(venv / "bin" / "bandlift", "--help", cwd=tmp_path)
    where = run(venv / "bin" / "python", "-c", "import bandlift.rt; print(bandlift.rt.__file__)", cwd=tmp_path)
    assert Path(where.strip()) == clone / "rt" / "__init__.py"


@pytest.mark.parametrize("argv,prog", [(["upsample", "a.wav", "b.wav", "--rtae"], "bandlift upsample"),
                                       (["dataset", "info", "FILE"], "bandlift dataset info")])
def test_a_usage_error_shows_the_subcommands_usage(capsys, argv, prog):
    """Issue 22: unknown arguments were reported with the top-level usage (`bandlift [-h] COMMAND`)."""
    from bandlift.rt.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith(f"usage: {prog} "), err
    assert f"{prog}: error: unrecognized arguments: {argv[-1]}" in err


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_no_help_text_points_at_text_that_is_not_there(command):
    """Issue 22: `bench --help` said "(see above)" with nothing above."""
    if command in ("train", "export"):
        pytest.importorskip("torch")
    helps = [a.help or "" for p in _parsers(build_parser(command)) for a in p._actions]
    assert not [h for h in helps if "see above" in h or "see below" in h]


def test_the_suites_skip_cleanly_without_the_eval_extra(tmp_path):
    """Issue 22: with only the runtime installed, 35 tests failed for want of librosa/visqol/matplotlib.
    Run the suites that use them with those imports made impossible: skips, never failures."""
    (tmp_path / "no_eval_extra.py").write_text(
        "import sys\nfor name in ('librosa', 'visqol', 'matplotlib'):\n    sys.modules[name] = None\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no_eval_extra", "-p", "no:cacheprovider",
                             "tests/eval", "tests/rt/test_bench.py", "-k", "not live"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    assert " skipped" in result.stdout.splitlines()[-1]
