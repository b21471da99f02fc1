"""The README's two set-up commands are the ones CI and users run."""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^    (\S.*)$", section, flags=re.M)


def test_readme_has_exactly_two_setup_commands():
    commands = setup_commands()
    assert len(commands) == 2, commands
    assert "pip install ." in commands[0] and "bandlift demo" in commands[0]
    assert "pytest" in commands[1] and commands[1].endswith("# test-command")


def test_ci_runs_the_readme_test_command():
    extracted = subprocess.run(
        ["sed", "-n", r"s/^    \(.*\) # test-command$/\1/p", "README.md"], cwd=ROOT,
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert extracted == setup_commands()[1].removesuffix(" # test-command")
    assert "README.md" in (ROOT / ".ci" / "run").read_text()


def test_the_readme_is_for_users_and_links_the_rest():
    """Issue 22: the README was 466 lines of research logs; they live in docs/, linked from it."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 200
    for doc in re.findall(r"\]\((docs/[\w.-]+\.md)\)", text) or ["(none linked)"]:
        assert (ROOT / doc).is_file(), doc
    assert {"docs/quality.md", "docs/speed.md", "docs/training.md"} <= set(re.findall(r"\((docs/[\w.-]+)\)", text))
