"""The import contracts of pyproject.toml (`[tool.importlinter]`) hold: pure modules free of
Dagster, the emulator independent of the historian client, Dagster's private API only where
listed with its reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ww_assets_tests.conftest import REPO


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    assert lint.exists(), "lint-imports missing: the test extras install import-linter"
    result = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout
