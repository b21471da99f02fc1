"""`bandlift eval --html`: the listening report, opened in a real headless browser."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf

for _extra in ("librosa", "matplotlib", "visqol"):  # `bandlift eval` needs the eval extra
    pytest.importorskip(_extra, reason="needs the eval extra: pip install 'bandlift[eval]'")
from bandlift.rt.cli import main  # noqa: E402
from headless_chromium import chromium, evaluate_in_page  # noqa: E402
from signals import music_like  # noqa: E402

# Per <audio>: load it fully, play it muted until its clock moves; report what the element saw.
PROBE_AUDIO = """Promise.all([...document.querySelectorAll('audio')].map(a => new Promise(done => {
  const report = problem => done({src: a.getAttribute('src'), state: a.readyState, duration: a.duration,
                                  played: a.currentTime > 0, problem: a.error ? a.error.code : problem});
  a.addEventListener('error', () => report('error'));
  a.addEventListener('timeupdate', () => { if (a.currentTime > 0) report(null); });
  a.muted = true;
  a.preload = 'auto';
  a.play().catch(e => report('play() refused: ' + e.name));
})))"""
PROBE_IMAGES = "[...document.images].map(i => ({src: i.getAttribute('src'), width: i.naturalWidth}))"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A report on two references (48 kHz and 44.1 kHz), sinc and the noise fill, no ViSQOL."""
    d = tmp_path_factory.mktemp("report")
    sf.write(d / "refs_a.wav", music_like(1.2, seed=4), 48000)
    sf.write(d / "refs_b.flac", music_like(1.0, seed=5, rate=44100, channels=2), 44100)
    rc = main(["eval", "--quiet", "--no-visqol", "--data", str(d / "refs_a.wav"), str(d / "refs_b.flac"),
               "--input-rate", "16000", "--no-model", "--baselines", "sinc,noise_fill",
               "--html", str(d / "html"), "--json", str(d / "eval.json")])
    assert rc == 0
    return d / "html", json.loads((d / "eval.json").read_text())


def test_report_page_is_static_and_complete(report):
    html_dir, results = report
    page = (html_dir / "index.html").read_text()
    assert results["listening"] == {"html": str(html_dir / "index.html"), "blind": False}
    sources = re.findall(r'<(?:audio|img)[^>]* src="([^"]+)"', page)
    # Per file: reference, input, sinc, noise_fill, each with a player and a spectrogram.
    assert len(sources) == 2 * 4 * 2
    for src in sources:
        assert not src.startswith(("/", "http:", "https:", "file:")) and (html_dir / src).is_file()
    assert page.count("<section>") == 2 and "overall: 2 file(s)" in page and "noise_fill" in page
    rates = {sf.info(html_dir / "audio" / f"001_{name}.flac").samplerate for name in ("reference", "sinc")}
    assert rates == {44100} and sf.info(html_dir / "audio" / "001_input.flac").samplerate == 16000
    info = sf.info(html_dir / "audio" / "001_reference.flac")
    assert info.subtype == "PCM_16" and info.channels == 2 and info.duration == pytest.approx(1.0, abs=1e-3)


@pytest.mark.skipif(chromium() is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_report_plays_in_a_headless_browser(report):
    html_dir, _ = report
    url = (html_dir / "index.html").as_uri()
    audio = evaluate_in_page(url, PROBE_AUDIO)
    assert len(audio) == 8
    for element in audio:
        assert element["problem"] is None and element["played"] is True, element
        assert element["state"] >= 2 and element["duration"] > 0.9, element  # decoded, 1 s or more
    images = evaluate_in_page(url, PROBE_IMAGES)
    assert len(images) == 8 and all(i["width"] > 100 for i in images), images


@pytest.mark.skipif(chromium() is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_probe_catches_a_broken_file(report, tmp_path):
    html_dir, _ = report
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk")
    page = tmp_path / "index.html"
    page.write_text('<audio src="broken.wav"></audio><audio src="missing.flac"></audio>'
                    f'<audio src="{(html_dir / "audio" / "000_sinc.flac").as_uri()}"></audio>')
    audio = evaluate_in_page(page.as_uri(), PROBE_AUDIO)
    assert [a["problem"] is not None for a in audio] == [True, True, False]
    assert [a["played"] for a in audio] == [False, False, True]


def test_blind_report_hides_the_methods(tmp_path):
    sf.write(tmp_path / "ref.wav", music_like(1.0, seed=6), 48000)
    rc = main(["eval", "--quiet", "--no-visqol", "--data", str(tmp_path / "ref.wav"), "--input-rate", "16000",
               "--no-model", "--baselines", "sinc,sbr,noise_fill", "--html", str(tmp_path / "html"),
               "--blind", "--json", str(tmp_path / "eval.json")])
    assert rc == 0
    listening = json.loads((tmp_path / "eval.json").read_text())["listening"]
    assert listening["blind"] is True
    key = listening["key"][str(tmp_path / "ref.wav")]
    assert sorted(key) == ["A", "B", "C"] and sorted(key.values()) == ["noise_fill", "sbr", "sinc"]
    section = (tmp_path / "html" / "index.html").read_text().split("<section>")[1]
    assert not any(name in section for name in ("sinc", "sbr", "noise_fill", "LSD"))
    audio = sorted(p.name for p in (tmp_path / "html" / "audio").iterdir())
    assert audio == ["000_A.flac", "000_B.flac", "000_C.flac", "000_input.flac", "000_reference.flac"]
    # The key points at the right files: only sinc's has nothing above the 8 kHz cutoff.
    for label, name in key.items():
        y, rate = sf.read(tmp_path / "html" / "audio" / f"000_{label}.flac")
        power = np.abs(np.fft.rfft(y)) ** 2
        high_share = power[int(len(y) * 10000 / rate):].sum() / power.sum()
        assert (high_share < 1e-4) == (name == "sinc"), (name, high_share)


def test_usage_errors(tmp_path, capsys):
    sf.write(tmp_path / "ref.wav", music_like(0.5), 48000)
    args = ["eval", "--quiet", "--no-visqol", "--data", str(tmp_path / "ref.wav"), "--input-rate", "16000",
            "--no-model", "--baselines", "sinc"]
    assert main([*args, "--blind"]) == 2
    assert "--html" in capsys.readouterr().err
    assert main([*args, "--html", str(tmp_path / "ref.wav" / "report")]) == 2  # under a file
    err = capsys.readouterr().err
    assert "cannot write" in err and "Traceback" not in err
