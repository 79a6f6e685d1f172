"""A backup file as `plaza restore` meets it: cut short by a copy that stopped, made by a newer
Plaza, or no backup at all. Each is refused, saying which, before anything is changed."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import tarfile
from pathlib import Path

import pytest
from plaza_cli import backup
from plaza_cli.main import main

# No PostgreSQL listens here: a restore that got as far as the database fails otherwise.
NO_DATABASE = "postgresql+asyncpg://plaza@127.0.0.1:9/plaza"


def _backup_file(tmp_path: Path, *, schema: str = "0019") -> Path:
    """A backup as plaza backup writes it (a random dump stands for pg_dump's)."""
    home = tmp_path / "made"
    home.mkdir()
    for name in backup.HOME_FILES:
        (home / name).write_text("Jun\n" if name == "city" else f"{name} of Jun's Plaza")
    dump = tmp_path / backup.DUMP
    dump.write_bytes(os.urandom(64_000))
    manifest = backup.Manifest(
        "Jun", schema, "2026-11-27 03:00:00 UTC", 12, 2, 1, home=backup.HOME_FILES
    )
    backup._write_archive(tmp_path / "plaza.tar", dump, home, manifest)
    return tmp_path / "plaza.tar"


def _cut(source: Path, size: int) -> Path:
    cut = source.with_name("cut.tar")
    cut.write_bytes(source.read_bytes()[:size])
    return cut


def _offsets(source: Path) -> dict[str, int]:
    """Where each member's header begins, and the dump's data ends."""
    with tarfile.open(source) as archive:
        members = archive.getmembers()
    dump = next(m for m in members if m.name == backup.DUMP)
    return {"end of dump": dump.offset_data + dump.size} | {m.name: m.offset for m in members}


def test_a_backup_cut_short_after_its_dump_is_refused_naming_what_it_lost(
    tmp_path: Path,
) -> None:
    # A copy that stopped in the last few kilobytes, the keys' part: the archive still read as
    # whole, and the restore put the database back and kept the machine's own keys (or none).
    whole = _backup_file(tmp_path)
    at = _offsets(whole)
    for size, lost in (
        (at["end of dump"], "home/city, home/jwt_secret, home/admin_key"),
        (at["home/admin_key"] + 100, "home/admin_key"),  # in the middle of its header
    ):
        with pytest.raises(
            backup.BackupError, match=re.escape(f"cut.tar is cut short (no {lost}): copy it")
        ):
            backup.read_manifest(_cut(whole, size))
    assert backup.read_manifest(whole).home == backup.HOME_FILES


def test_a_backup_cut_short_in_its_dump_is_said_to_be_so(tmp_path: Path) -> None:
    # It was "not a backup made by plaza backup (ReadError: unexpected end of data)" for a
    # mayor holding the town's only copy of one.
    whole = _backup_file(tmp_path)
    with pytest.raises(backup.BackupError, match=r"is cut short \(unexpected end of data\): copy"):
        backup.read_manifest(_cut(whole, _offsets(whole)["end of dump"] - 5_000))


def test_a_file_that_is_no_backup_is_said_to_be_none(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(2_000))
    other = tmp_path / "other.tar"
    with tarfile.open(other, "w") as archive:
        info = tarfile.TarInfo("notes.txt")
        info.size = 5
        archive.addfile(info, io.BytesIO(b"notes"))
    for source in (photo, other):
        with pytest.raises(backup.BackupError, match="not a backup made by plaza backup"):
            backup.read_manifest(source)


def test_a_backup_of_an_older_plaza_lists_no_home_files_and_is_read(tmp_path: Path) -> None:
    whole = _backup_file(tmp_path)
    older = tmp_path / "older.tar"
    with tarfile.open(whole) as source, tarfile.open(older, "w") as archive:
        for member in source.getmembers():
            data = source.extractfile(member)
            assert data is not None
            content = data.read()
            if member.name == backup.MANIFEST:
                about = json.loads(content)
                del about["home"]
                content = json.dumps(about).encode()
                member.size = len(content)
            archive.addfile(member, io.BytesIO(content))
    assert backup.read_manifest(older).home is None


def test_a_backup_made_by_a_newer_plaza_is_refused_before_the_database_is_touched(
    tmp_path: Path,
) -> None:
    # A schema no migration of this Plaza names: restored, it stopped the next make run at
    # "Can't locate revision", and the town's database it replaced was gone.
    newer = _backup_file(tmp_path, schema="0999")
    with pytest.raises(backup.BackupError, match=r"made by a newer Plaza \(schema 0999; this"):
        asyncio.run(backup.restore(NO_DATABASE, tmp_path / "home", newer))
    assert not (tmp_path / "home").exists()


def test_plaza_restore_of_a_newer_plazas_backup_makes_no_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # On a new machine it started an embedded PostgreSQL in the empty home before refusing.
    newer = _backup_file(tmp_path, schema="0999")
    home = tmp_path / "home"
    monkeypatch.setenv("PLAZA_HOME", str(home))
    monkeypatch.setenv("PLAZA_CITY_CONFIG", str(Path("deploy/cities/jun.toml").resolve()))
    monkeypatch.delenv("PLAZA_DATABASE_URL", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["restore", str(newer)])
    assert exit_.value.code == 1
    said = capsys.readouterr().err
    assert said.startswith(f"plaza restore: {newer} was made by a newer Plaza (schema 0999;")
    assert "update this Plaza first" in said
    assert not home.exists()


def test_plaza_backup_into_a_directory_names_the_file_to_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # "plaza backup /media/usb" dumped the whole database, then failed with a traceback
    # (IsADirectoryError), or PermissionError writing its temporary file in /media.
    monkeypatch.setenv("PLAZA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PLAZA_DATABASE_URL", NO_DATABASE)
    with pytest.raises(SystemExit) as exit_:
        main(["backup", str(tmp_path)])
    assert exit_.value.code == 1
    assert capsys.readouterr().err == (
        f"plaza backup: {tmp_path} is a directory: name the backup's file in it, such as "
        f"{tmp_path / 'plaza-YYYY-MM-DD.tar'}\n"
    )
