"""A worker's state directory (MOMENTS_DATA_DIR) that cannot be made or written stops the
start with the variable and the fix, as any setting does: it stopped with Python's
traceback (`FileNotFoundError: ... '/proc/x'`, exit code 1), and a volume mounted for
another user (no fsGroup) would have failed the same way or later, in RocksDB."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from moments.check import Verdict, data_dir_finding
from moments.exceptions import ConfigError
from moments.worker import ensure_data_dir


def test_a_new_directory_is_made_for_its_owner_only(tmp_path: Path) -> None:
    target = tmp_path / "state" / "moments"
    ensure_data_dir(target)
    assert target.is_dir()
    assert target.stat().st_mode & 0o777 == 0o700


def test_one_that_exists_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "state"
    target.mkdir(mode=0o755)
    ensure_data_dir(target)
    assert target.stat().st_mode & 0o777 == 0o755


def test_one_that_cannot_be_made_names_the_variable_and_the_fix() -> None:
    with pytest.raises(ConfigError) as err:
        ensure_data_dir(Path("/proc/moments-state"))
    message = str(err.value)
    assert "MOMENTS_DATA_DIR" in message
    assert "/proc/moments-state" in message
    assert "point it at a directory" in message


def test_one_not_writable_names_the_variable_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a volume mounted for another user is (root, running these tests, writes
    anywhere: `os.access` answers as for the worker's user)."""
    target = tmp_path / "state"
    target.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(ConfigError) as err:
        ensure_data_dir(target)
    assert "MOMENTS_DATA_DIR" in str(err.value)
    assert "not writable" in str(err.value)


def test_a_file_in_its_place_names_the_variable(tmp_path: Path) -> None:
    target = tmp_path / "state"
    target.write_text("")
    with pytest.raises(ConfigError) as err:
        ensure_data_dir(target)
    assert "MOMENTS_DATA_DIR" in str(err.value)


class TestCheck:
    """`moments check` (in a pod: `kubectl -n moments exec ... moments check`) says whether
    the worker could use MOMENTS_DATA_DIR, without creating it."""

    def test_a_writable_directory_is_ok(self, tmp_path: Path) -> None:
        finding = data_dir_finding(tmp_path)
        assert finding.verdict is Verdict.OK, finding
        assert str(tmp_path) in finding.step

    def test_one_still_to_make_is_ok_and_not_made(self, tmp_path: Path) -> None:
        target = tmp_path / "state" / "moments"
        finding = data_dir_finding(target)
        assert finding.verdict is Verdict.OK, finding
        assert "made at start" in finding.detail
        assert not target.exists()

    def test_a_relative_one_still_to_make_names_where_it_will_be(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The default, `./.moments-data`, said "not there yet: made at start, in .":
        which directory "." was, the pod's or the shell's, was for the reader to guess."""
        monkeypatch.chdir(tmp_path)
        finding = data_dir_finding(Path(".moments-data"))
        assert finding.detail == f"not there yet: made at start, in {tmp_path.resolve()}"

    def test_one_not_writable_fails_with_the_fix(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(os, "access", lambda path, mode: False)
        finding = data_dir_finding(tmp_path)
        assert finding.verdict is Verdict.FAIL, finding
        assert "MOMENTS_DATA_DIR" in finding.detail

    def test_a_file_in_its_place_fails(self, tmp_path: Path) -> None:
        (tmp_path / "state").write_text("")
        finding = data_dir_finding(tmp_path / "state" / "moments")
        assert finding.verdict is Verdict.FAIL, finding


@pytest.mark.parametrize("below", [False, True])
def test_a_link_to_nothing_is_named_by_check_and_worker_alike(tmp_path: Path, below: bool) -> None:
    """A volume's link left dangling (the path itself, or a folder above it): the worker
    cannot make the directory, and `moments check` said "made at start"."""
    link = tmp_path / "state"
    link.symlink_to(tmp_path / "gone")
    target = link / "moments" if below else link
    finding = data_dir_finding(target)
    assert finding.verdict is Verdict.FAIL, finding
    assert "a link to nothing" in finding.detail
    with pytest.raises(ConfigError) as err:
        ensure_data_dir(target)
    assert "a link to nothing" in str(err.value)
    assert "MOMENTS_DATA_DIR" in str(err.value)
