"""The repository stands on its own: nothing it tracks refers to a folder beside the clone, and every
third-party data file it ships has its provenance and licence note next to it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A parent directory's "shared" folder (the reference material some developers have beside their clone),
# or one of its well-known entries named without the "../".
OUTSIDE = re.compile(r"(\.\./)+shared\b|\bshared/(fixtures|INCIDENTS|ARCHITECTURE|hooks)\b")
# Folders of data nobody in this project wrote.
DATA_FOLDERS = ["framework/venue/data", "plugins/binance/tests/fixtures", "plugins/bybit/tests/fixtures"]
SKIPPED_WHEN_WALKING = {".git", ".venv", ".tox", "__pycache__", ".hypothesis", "mutants", "build", "dist"}


def tracked_files() -> list[Path]:
    """``git ls-files`` in a checkout; every file under the root (less tool folders) in an unpacked sdist."""
    if (ROOT / ".git").exists():
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        return [ROOT / name for name in out.decode().split("\0") if name]
    return [
        path
        for path in ROOT.rglob("*")
        if path.is_file() and not SKIPPED_WHEN_WALKING.intersection(path.relative_to(ROOT).parts)
        and not any(part.endswith(".egg-info") for part in path.parts)
    ]


def test_no_tracked_file_refers_to_a_folder_outside_the_repository():
    offenders = []
    for path in tracked_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):  # binary, or deleted in the working tree
            continue
        for number, line in enumerate(text.split("\n"), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "refers outside the repository:\n" + "\n".join(offenders)


def test_the_checker_finds_what_it_is_for():
    up, shared = "../", "shared" + "/"  # split, so that this file passes its own check
    for line in (f"see {up}{shared}INCIDENTS.md", f"`{up}{up}{shared}`", f"copied from {shared}fixtures/market"):
        assert OUTSIDE.search(line), line
    for line in ("docs/incidents.md", "a shared VM", "shared by the tests", "plugins/bybit/tests/fixtures/"):
        assert not OUTSIDE.search(line), line


def test_every_shipped_data_file_has_its_provenance_and_licence_beside_it():
    for folder in DATA_FOLDERS:
        notice = ROOT / folder / "PROVENANCE.md"
        assert notice.is_file(), f"{folder} ships third-party data without PROVENANCE.md"
        text = notice.read_text(encoding="utf-8")
        assert "licence" in text.lower(), f"{notice.relative_to(ROOT)} has no licence note"
        files = [p for p in (ROOT / folder).rglob("*") if p.is_file() and p.name != "PROVENANCE.md"]
        assert files, f"{folder} is empty"
        for path in files:
            # a file at the top is named in the notice (or its pattern, `*.json`); a file deeper, its folder
            parts = path.relative_to(ROOT / folder).parts
            names = [f"`{parts[0]}/"] if len(parts) > 1 else [path.name, f"`*{path.suffix}`"]
            assert any(name in text for name in names), f"{folder}/{'/'.join(parts)} is not in its PROVENANCE.md"


def test_the_project_is_licensed_as_it_declares():
    assert "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    for pyproject in ("pyproject.toml", "plugins/binance/pyproject.toml", "plugins/bybit/pyproject.toml"):
        assert 'license = { text = "MIT" }' in (ROOT / pyproject).read_text(encoding="utf-8"), pyproject
