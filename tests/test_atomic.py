"""visualbert.atomic.write_file: a result file is complete or absent, never half written."""
import errno
import os

import pytest

from visualbert.atomic import write_file


def test_writes_the_file_with_the_mode_new_files_get(tmp_path):
    path = tmp_path / "sub" / "result.json"
    umask = os.umask(0o022)
    try:
        write_file(str(path), lambda f: f.write("[1, 2]"))
    finally:
        os.umask(umask)
    assert path.read_text() == "[1, 2]"
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)  # not the temporary file's private 0600
    assert os.listdir(tmp_path / "sub") == ["result.json"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "result.csv"
    path.write_text("old\n")

    def half_then_crash(f):
        f.write("new,")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_file(str(path), half_then_crash)
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["result.csv"]


def test_a_full_disk_is_one_line_and_nothing_is_written(tmp_path):
    def disk_full(f):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(SystemExit) as e:
        write_file(str(tmp_path / "result.json"), disk_full)
    assert str(e.value) == f"error: writing {tmp_path / 'result.json'} failed (No space left on device); nothing was written"
    assert os.listdir(tmp_path) == []


def test_binary_content(tmp_path):
    write_file(str(tmp_path / "a.png"), lambda f: f.write(b"\x89PNG"), binary=True)
    assert (tmp_path / "a.png").read_bytes() == b"\x89PNG"
