"""What ships: the licence files in the wheel, and a help text for every command-line option."""
import argparse
import subprocess
import sys
from pathlib import Path

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
