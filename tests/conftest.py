"""Shared test set-up. The fixtures' helpers live in one place, tests/fixtures/: the JACK and PulseAudio
servers and the contract-following test models (`jack_server`), the fake Spotify API
(`fake_spotify_server`), seeded test signals (`signals`) and headless Chromium (`headless_chromium`).
Test modules import them by name (``from jack_server import ...``).

Tests mirror the package layout: rt/ (engine, files, bench), live/ (real JACK/PulseAudio devices),
train/, export/, eval/; test_imports.py walks the import graph.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
