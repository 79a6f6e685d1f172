"""PLAZA_HOME's keys, as a restore puts them back: never left empty or half-written."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from plaza_cli import backup


def _home(tmp_path: Path) -> tuple[Path, Path]:
    kept, home = tmp_path / "kept", tmp_path / "home"
    kept.mkdir()
    home.mkdir()
    for name in backup.HOME_FILES:
        (kept / name).write_bytes(f"backup's {name}".encode())
        (home / name).write_bytes(f"old {name}".encode())
    return kept, home


def test_the_home_files_become_the_backups_readable_by_their_owner_only(tmp_path: Path) -> None:
    kept, home = _home(tmp_path)
    backup._put_back(kept, home)
    for name in backup.HOME_FILES:
        assert (home / name).read_bytes() == f"backup's {name}".encode()
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600
    assert sorted(p.name for p in home.iterdir()) == sorted(backup.HOME_FILES)  # no leftovers


def test_a_restore_that_fails_writing_a_home_file_leaves_the_old_one_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash (here: the disk full) while the keys are put back must not leave an empty
    jwt_secret or admin_key: Plaza would start with no way to check its tokens or sign in."""
    kept, home = _home(tmp_path)

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(backup.os, "replace", full)
    monkeypatch.setattr(backup.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        backup._put_back(kept, home)
    for name in backup.HOME_FILES:
        assert (home / name).read_bytes() == f"old {name}".encode()
