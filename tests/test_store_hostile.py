"""The template store against a hostile file system (issue 11, part 4): symbolic
links, group/other modes, other owners, and concurrent enrolment of one subject
(in one process through two store objects, and with two real ``enroll`` runs)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ecgstream.templates import Template, TemplateError, TemplateStore

KEY = bytes(range(32))
EXE = [sys.executable, "-m", "ecgstream"]


def make(subject: str = "alice", seed: int = 0) -> Template:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=16).astype(np.float32)
    return Template(subject=subject, model_id="m1", centroid=c / np.linalg.norm(c), n_beats=12,
                    created_utc="2026-12-03T00:00:00+00:00")


@pytest.fixture
def store(tmp_path: Path) -> TemplateStore:
    s = TemplateStore(tmp_path / "store", KEY)
    s.save(make())
    return s


def test_a_symlinked_template_is_refused_and_counted(store, tmp_path):
    other = store.save(make("bob", 1))
    os.symlink(other, store.directory / "carol.tmpl")
    with pytest.raises(TemplateError, match="symbolic link: refused"):
        store.load("carol")
    assert sorted(t.subject for t in store.list()) == ["alice", "bob"]
    assert len(store.last_report.broken) == 1 and "symbolic link" in str(store.last_report.broken[0])
    # a link pointing outside the store, to a file of the right name: refused all the same
    outside = tmp_path / "elsewhere"
    outside.mkdir(mode=0o700)
    TemplateStore(outside, KEY).save(make("dave", 2))
    os.symlink(outside / "dave.tmpl", store.directory / "dave.tmpl")
    with pytest.raises(TemplateError, match="symbolic link"):
        store.load("dave")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o606])
def test_a_template_with_group_or_other_permissions_is_refused(store, mode):
    path = store.path_for("alice")
    path.chmod(mode)
    with pytest.raises(TemplateError, match=rf"group/other permissions \(mode {mode:o}\).*chmod 600"):
        store.load("alice")
    assert store.load_all("m1") == {} and store.last_report.errors == 1
    path.chmod(0o600)
    assert store.load("alice") == make()


@pytest.mark.parametrize("mode", [0o750, 0o705, 0o777])
def test_a_store_directory_with_group_or_other_permissions_is_refused(store, mode):
    store.directory.chmod(mode)
    try:
        for call in (lambda: store.load("alice"), lambda: store.list(), lambda: store.load_all("m1"),
                     lambda: store.save(make("bob"))):
            with pytest.raises(TemplateError, match=r"store has group/other permissions.*chmod 700"):
                call()
        assert not store.path_for("bob").exists()
    finally:
        store.directory.chmod(0o700)
    assert store.load("alice") == make()


def test_a_symlinked_store_directory_is_refused(store, tmp_path):
    link = tmp_path / "link"
    os.symlink(store.directory, link)
    s = TemplateStore(link, KEY)
    with pytest.raises(TemplateError, match="store is a symbolic link"):
        s.load("alice")
    with pytest.raises(TemplateError, match="store is a symbolic link"):
        s.save(make("bob"))


def test_a_fifo_or_directory_in_place_of_a_template_is_refused_without_blocking(store):
    os.mkfifo(store.directory / "fifo.tmpl", 0o600)
    (store.directory / "dir.tmpl").mkdir(mode=0o700)
    t0 = time.monotonic()
    with pytest.raises(TemplateError, match="not a regular file"):
        store.load("fifo")
    with pytest.raises(TemplateError):
        store.load("dir")
    assert [t.subject for t in store.list()] == ["alice"] and len(store.last_report.broken) == 2
    assert time.monotonic() - t0 < 5


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_files_and_directories_of_another_owner_are_refused(store):
    path = store.path_for("alice")
    os.chown(path, 12345, -1)
    with pytest.raises(TemplateError, match=r"belongs to uid 12345.*chown"):
        # root's own files are accepted; another user's are not, even for root
        store.load("alice")
    os.chown(path, 0, -1)
    os.chown(store.directory, 12345, -1)
    try:
        with pytest.raises(TemplateError, match=r"store belongs to uid 12345"):
            store.load("alice")
    finally:
        os.chown(store.directory, 0, -1)


def test_a_symlink_planted_where_a_template_will_be_written_is_replaced_not_followed(store, tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    os.symlink(victim, store.directory / "bob.tmpl")
    store.save(make("bob"), replace=True)
    assert victim.read_bytes() == b"precious"
    assert not (store.directory / "bob.tmpl").is_symlink() and store.load("bob") == make("bob")


# -- concurrent enrolment -----------------------------------------------------------
def test_two_writers_of_one_new_subject_the_second_is_refused(tmp_path):
    a, b = TemplateStore(tmp_path / "s", KEY), TemplateStore(tmp_path / "s", KEY)
    assert "carol" not in a and "carol" not in b  # both checked: not enrolled
    a.save(make("carol", 1))
    with pytest.raises(TemplateError, match="written by another enrolment while this one ran.*--force"):
        b.save(make("carol", 2))
    assert a.load("carol") == make("carol", 1)
    b.save(make("carol", 2), replace=True)  # --force
    assert a.load("carol") == make("carol", 2)


def test_an_append_after_a_concurrent_reenrolment_is_refused(store):
    other = TemplateStore(store.directory, KEY)
    base = store.load("alice")
    other.save(make("alice", 5), replace=True)
    with pytest.raises(TemplateError, match="changed by another enrolment"):
        store.save(base)
    assert other.load("alice") == make("alice", 5)
    store.load("alice")  # seen again: now it may be saved
    store.save(make("alice", 6))
    assert other.load("alice") == make("alice", 6)


def test_save_refuses_an_existing_subject_with_replace_false(store):
    with pytest.raises(TemplateError, match="written by another enrolment"):
        TemplateStore(store.directory, KEY).save(make("alice", 9), replace=False)


def test_the_lock_is_a_per_subject_flock_in_the_store(store):
    import fcntl

    lock = store.directory / ".alice.lock"
    assert lock.exists() and (lock.stat().st_mode & 0o777) == 0o600
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # not held between saves
        with pytest.raises(BlockingIOError):  # the lock is what save takes
            fd2 = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd2, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(fd2)
    finally:
        os.close(fd)
    assert [t.subject for t in store.list()] == ["alice"]  # the lock file is no template


def test_two_real_enroll_runs_of_one_subject_exactly_one_wins(tmp_path):
    from ecgstream.cli.commands import excerpt_record

    key = tmp_path / "template.key"
    assert subprocess.run([*EXE, "keygen", str(key)], capture_output=True, timeout=120).returncode == 0
    st = tmp_path / "t"

    def enroll(person: int, rec: int) -> subprocess.Popen:
        # paced at 2x real time: 20 s of signal take ~10 s, so both runs have checked
        # "not enrolled" long before either saves
        return subprocess.Popen([*EXE, "enroll", "--subject", "p", "--source",
                                 f"wfdb:{excerpt_record(person, rec)}?speed=2", "--store", str(st),
                                 "--key-file", str(key)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    procs = [enroll(1, 2), enroll(6, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 1], (codes, outs)
    loser = codes.index(1)
    assert "by another enrolment while this one ran" in outs[loser][1] and "Traceback" not in outs[loser][1]
    assert "enrolled p" in outs[1 - loser][0]
    from ecgstream.templates import load_key

    t = TemplateStore(st, load_key(key_file=str(key))).load("p")
    assert ("Person_01", "Person_06")[1 - loser] in t.source
