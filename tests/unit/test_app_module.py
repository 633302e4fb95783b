"""`--app` finds a job module in the working directory, as Celery's `-A` does."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from consumers import JobRegistry
from infra.bootstrap import load_registry
from infra.errors import ConfigurationError

MODULE = "clinic_jobs_in_the_working_directory"


@pytest.fixture
def working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory of its own, made the working directory, on no import path: as when
    the installed `jobledger` command runs there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    return tmp_path


def test_a_module_in_the_working_directory_is_found(working_directory: Path) -> None:
    (working_directory / f"{MODULE}.py").write_text(
        "from consumers import JobRegistry\n\nclinic = JobRegistry()\n"
    )
    assert isinstance(load_registry(MODULE), JobRegistry)
    assert isinstance(load_registry(f"{MODULE}:clinic"), JobRegistry)
    assert sys.path[-1] == str(working_directory)  # after everything else: shadows nothing


def test_a_module_that_is_nowhere_is_still_a_clear_error(working_directory: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot import job app 'no_such_jobs'"):
        load_registry("no_such_jobs")
