"""Every test gets its own state directory: a `mediatord serve` a test starts
journals into $XDG_STATE_HOME/mediatord, which must be neither the user's nor
another test's. (Module-scoped servers are set up before the per-test variable:
they pass --state-dir, and the session-wide one below keeps them off the user's.)"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="mediatord-test-state-")


@pytest.fixture(autouse=True)
def _private_state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
