"""Only clipkit/dassl.py may import Dassl: everything else goes through the compat module."""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALLOWED = {os.path.join("clipkit", "dassl.py")}
SKIP_DIRS = {".git", ".venv", "__pycache__", "output", ".cache", "node_modules"}
IMPORT = re.compile(r"^\s*(import\s+dassl\b|from\s+dassl\b)", re.MULTILINE)


def python_files():
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
        for name in files:
            if name.endswith(".py"):
                yield os.path.relpath(os.path.join(folder, name), REPO)


def test_only_the_compat_module_imports_dassl():
    files = list(python_files())
    assert os.path.join("clipkit", "dassl.py") in files and len(files) > 10
    offenders = []
    for path in files:
        if path in ALLOWED:
            continue
        with open(os.path.join(REPO, path), encoding="utf-8", errors="replace") as handle:
            if IMPORT.search(handle.read()):
                offenders.append(path)
    assert not offenders, f"import Dassl names from clipkit.dassl instead: {offenders}"


def test_the_pattern_catches_both_forms():
    assert IMPORT.search("import dassl\n") and IMPORT.search("    from dassl.engine import TrainerX\n")
    assert not IMPORT.search("from clipkit.dassl import TrainerX\n")
