"""Template store: encryption, authentication, atomic writes, keys."""

from __future__ import annotations

import base64
import logging
import os
import stat
import struct

import numpy as np
import pytest

from ecgstream.pipeline.scores import make_template
from ecgstream.templates import (
    FORMAT_VERSION,
    MAGIC,
    Template,
    TemplateError,
    TemplateKeyError,
    TemplateKeyMissing,
    TemplateStore,
    create_key_file,
    load_key,
    parse_key,
)
from ecgstream.templates import store as tm

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def make(subject: str = "alice", model_id: str = "model-a", seed: int = 0, dim: int = 32) -> Template:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(20, dim))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return Template(
        subject=subject,
        model_id=model_id,
        centroid=make_template(emb),
        n_beats=20,
        created_utc="2025-01-02T03:04:05+00:00",
        quality={"score_mean": 0.91, "score_std": 0.03, "n_seen": 24},
        source="wfdb:data/Person_01/rec_1",
    )


@pytest.fixture
def store(tmp_path):
    return TemplateStore(tmp_path / "store", KEY)


# -- round trip, modes, atomicity ---------------------------------------------------
def test_round_trip(store):
    t = make()
    store.save(t)
    back = store.load("alice")
    assert back == t
    assert back.centroid.dtype == np.float32
    assert np.array_equal(back.centroid, t.centroid)
    assert back.quality == t.quality
    assert not back.centroid.flags.writeable
    assert store.load("alice", model_id="model-a") == t


def test_file_and_dir_modes(store):
    path = store.save(make())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.directory).st_mode) == 0o700
    assert path.name == "alice.tmpl"


def test_file_holds_no_plaintext_centroid_or_stats(store):
    t = make()
    blob = store.save(t).read_bytes()
    assert blob.startswith(MAGIC)
    assert t.centroid.tobytes()[:16] not in blob
    assert base64.b64encode(t.centroid.astype("<f4").tobytes())[:16] not in blob
    assert b"score_mean" not in blob and b"rec_1" not in blob


def test_each_write_uses_a_new_nonce(store):
    t = make()
    a = store.save(t).read_bytes()
    b = store.save(t).read_bytes()
    assert a != b
    assert store.load("alice") == t


def test_no_temp_file_left(store):
    store.save(make())
    store.save(make(seed=1))
    assert sorted(p.name for p in store.directory.iterdir() if not p.name.endswith(".lock")) == ["alice.tmpl"]


def test_failed_replace_keeps_old_file(store, monkeypatch):
    old = make(seed=0)
    store.save(old)

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tm.os, "replace", boom)
    with pytest.raises(TemplateError, match="No space left"):
        store.save(make(seed=1))
    monkeypatch.undo()
    assert store.load("alice") == old
    assert sorted(p.name for p in store.directory.iterdir() if not p.name.endswith(".lock")) == ["alice.tmpl"]


def test_failed_write_midway_keeps_old_file(store, monkeypatch):
    old = make(seed=0)
    store.save(old)

    def boom(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(tm.os, "fsync", boom)
    with pytest.raises(TemplateError, match="Input/output error"):
        store.save(make(seed=1))
    monkeypatch.undo()
    assert store.load("alice") == old
    assert [p.name for p in store.directory.iterdir() if not p.name.endswith(".lock")] == ["alice.tmpl"]


# -- tampering and foreign files ----------------------------------------------------
@pytest.mark.parametrize("where", ["header", "nonce", "ciphertext", "tag"])
def test_tampered_byte_is_refused(store, where):
    path = store.save(make())
    blob = bytearray(path.read_bytes())
    header_len = 8 + 2 + 1 + len("alice") + 2 + len("model-a")
    pos = {"header": header_len - 1, "nonce": header_len + 3,
           "ciphertext": header_len + 20, "tag": len(blob) - 1}[where]
    blob[pos] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(TemplateError) as ei:
        store.load("alice")
    assert str(path) in str(ei.value)
    assert ei.value.path == str(path)


def test_edited_model_id_in_header_is_refused(store):
    path = store.save(make(model_id="model-a"))
    blob = path.read_bytes().replace(b"model-a", b"model-b", 1)
    path.write_bytes(blob)
    with pytest.raises(TemplateError, match="authentication failed"):
        store.load("alice")


@pytest.mark.parametrize("cut", [0, 5, 12, 30, -1, -16])
def test_truncated_file_is_refused(store, cut):
    path = store.save(make())
    blob = path.read_bytes()
    path.write_bytes(blob[:cut])
    with pytest.raises(TemplateError) as ei:
        store.load("alice")
    assert str(path) in str(ei.value)


def test_swapped_files_are_refused(store):
    a = store.save(make("alice"))
    b = store.save(make("bob", seed=1))
    blob_a, blob_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(blob_b)
    b.write_bytes(blob_a)
    with pytest.raises(TemplateError, match="renamed or swapped"):
        store.load("alice")
    with pytest.raises(TemplateError, match="renamed or swapped"):
        store.load("bob")


def test_renamed_file_with_edited_header_subject_fails_authentication(store):
    # Same-length subject rewritten in the header to match the new name.
    src = store.save(make("alice"))
    blob = src.read_bytes().replace(b"alice", b"carol", 1)
    (store.directory / "carol.tmpl").write_bytes(blob)
    (store.directory / "carol.tmpl").chmod(0o600)
    with pytest.raises(TemplateError, match="authentication failed"):
        store.load("carol")


def test_wrong_key_is_refused(store, tmp_path):
    store.save(make())
    other = TemplateStore(store.directory, OTHER_KEY)
    with pytest.raises(TemplateError, match="another template key") as ei:
        other.load("alice")
    assert "InvalidTag" not in repr(ei.value)
    assert ei.value.__cause__ is None


def test_foreign_format_is_refused(store):
    store.directory.mkdir(mode=0o700)
    (store.directory / "alice.tmpl").write_bytes(b'{"subject": "alice"}')
    (store.directory / "alice.tmpl").chmod(0o600)
    with pytest.raises(TemplateError, match="bad magic"):
        store.load("alice")


def test_newer_format_version_is_a_clear_error(store):
    path = store.save(make())
    blob = bytearray(path.read_bytes())
    struct.pack_into(">H", blob, 8, FORMAT_VERSION + 1)
    path.write_bytes(bytes(blob))
    with pytest.raises(TemplateError, match=r"format version 3 is newer.*upgrade"):
        store.load("alice")


def test_model_mismatch_is_a_clear_error(store):
    store.save(make(model_id="model-a"))
    with pytest.raises(TemplateError) as ei:
        store.load("alice", model_id="model-b")
    msg = str(ei.value)
    assert "'model-a'" in msg and "'model-b'" in msg and "re-enrol" in msg


def test_missing_subject(store):
    with pytest.raises(TemplateError, match="no template for subject 'nobody'"):
        store.load("nobody")


# -- list, remove, load_all ---------------------------------------------------------
def test_list_and_remove(store):
    assert store.list() == []
    store.save(make("bob", seed=1))
    store.save(make("alice"))
    rows = store.list()
    assert [r.subject for r in rows] == ["alice", "bob"]
    assert rows[0] == ("alice", "model-a", "2025-01-02T03:04:05+00:00", 20)
    assert "alice" in store and "carol" not in store
    store.remove("alice")
    assert [r[0] for r in store.list()] == ["bob"]
    with pytest.raises(TemplateError, match="no template"):
        store.remove("alice")


def test_list_skips_and_reports_broken_files(store, caplog):
    store.save(make("alice"))
    store.save(make("bob", seed=1))
    (store.directory / "bob.tmpl").write_bytes(b"garbage")
    (store.directory / "notes.txt").write_text("ignored")
    with caplog.at_level(logging.WARNING, logger="ecgstream.templates"):
        rows = store.list()
    assert [r.subject for r in rows] == ["alice"]
    assert len(store.last_report.broken) == 1
    assert "bob.tmpl" in str(store.last_report.broken[0])
    assert "bob.tmpl" in caplog.text


def test_load_all_skips_other_models(store, caplog):
    store.save(make("alice", "model-a"))
    store.save(make("bob", "model-b", seed=1))
    store.save(make("carol", "model-a", seed=2))
    with caplog.at_level(logging.WARNING, logger="ecgstream.templates"):
        got = store.load_all("model-a")
    assert sorted(got) == ["alice", "carol"]
    assert store.last_report.other_model == [("bob", "model-b")]
    assert store.last_report.errors == 1
    assert "bob" in caplog.text and "model-b" in caplog.text


def test_load_all_strict_raises_on_broken(store):
    store.save(make("alice"))
    (store.directory / "zed.tmpl").write_bytes(MAGIC + b"\x00\x01")
    assert sorted(store.load_all("model-a")) == ["alice"]
    assert store.last_report.errors == 1
    with pytest.raises(TemplateError, match="zed.tmpl"):
        store.load_all("model-a", strict=True)


def test_missing_store_dir_is_empty(tmp_path):
    s = TemplateStore(tmp_path / "nope", KEY)
    assert s.list() == [] and s.load_all("m") == {}
    assert not (tmp_path / "nope").exists()


# -- validation ---------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["", ".", "..", "../etc/passwd", "a/b", ".hidden", "-rf",
                                 "x" * 65, "a b", "é", "a\0b", None, 3])
def test_bad_subject_ids(bad, store):
    with pytest.raises(TemplateError, match="invalid subject id"):
        make(subject=bad)
    with pytest.raises(TemplateError, match="invalid subject id"):
        store.load(bad)


@pytest.mark.parametrize("good", ["a", "Person_01", "person-01", "a.b", "_x", "x" * 64])
def test_good_subject_ids(good):
    assert make(subject=good).subject == good


@pytest.mark.parametrize("kw, match", [
    ({"centroid": np.ones(4)}, "unit length"),
    ({"centroid": np.zeros((2, 2))}, "1-D"),
    ({"centroid": np.array([np.nan, 1.0])}, "finite"),
    ({"n_beats": 0}, "n_beats"),
    ({"n_beats": True}, "n_beats"),
    ({"created_utc": "yesterday"}, "ISO 8601"),
    ({"model_id": ""}, "model_id"),
    ({"quality": {"x": [1, 2]}}, "quality"),
    ({"quality": {"x": float("inf")}}, "finite"),
])
def test_template_validation(kw, match):
    base = dict(subject="a", model_id="m", centroid=np.array([1.0, 0.0]), n_beats=3,
                created_utc="2025-01-01T00:00:00+00:00")
    base.update(kw)
    with pytest.raises(TemplateError, match=match):
        Template(**base)


def test_repr_hides_centroid():
    t = make()
    assert "centroid" not in repr(t) and str(t.centroid[0])[:6] not in repr(t)


def test_store_rejects_short_key(tmp_path):
    with pytest.raises(TemplateKeyError, match="32 bytes"):
        TemplateStore(tmp_path, b"short")


# -- keys ---------------------------------------------------------------------------
def test_parse_key_encodings():
    assert parse_key(KEY, "t") == KEY
    assert parse_key(KEY.hex(), "t") == KEY
    assert parse_key(KEY.hex().upper() + "\n", "t") == KEY
    assert parse_key(base64.b64encode(KEY).decode(), "t") == KEY
    assert parse_key(base64.urlsafe_b64encode(KEY).decode().rstrip("="), "t") == KEY
    assert parse_key((KEY.hex() + "\n").encode(), "t") == KEY


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33, b"\xff" * 40, "ab" * 31,
                                 "ab" * 33, base64.b64encode(b"x" * 31).decode(), "not a key"])
def test_parse_key_rejects_bad_lengths(bad):
    with pytest.raises(TemplateKeyError, match="32") as ei:
        parse_key(bad, "somewhere")
    assert "somewhere" in str(ei.value)


def test_load_key_order(tmp_path):
    cred = tmp_path / "creds"
    cred.mkdir()
    (cred / "template-key").write_bytes(KEY)
    kf = tmp_path / "key"
    kf.write_text(bytes(range(2, 34)).hex())
    env = {"CREDENTIALS_DIRECTORY": str(cred), "ECGSTREAM_TEMPLATE_KEY": OTHER_KEY.hex()}
    assert load_key(key_file=kf, environ=env) == KEY  # credential first
    del env["CREDENTIALS_DIRECTORY"]
    assert load_key(key_file=kf, environ=env) == OTHER_KEY  # then environment
    assert load_key(key_file=kf, environ={}) == bytes(range(2, 34))  # then file


def test_load_key_named_credential_and_env(tmp_path):
    (tmp_path / "k2").write_text(base64.b64encode(KEY).decode())
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path), "MY_KEY": OTHER_KEY.hex()}
    assert load_key(credential="k2", environ=env) == KEY
    assert load_key(key_env="MY_KEY", environ={"MY_KEY": OTHER_KEY.hex()}) == OTHER_KEY


def test_load_key_missing_is_actionable(tmp_path):
    with pytest.raises(TemplateKeyMissing) as ei:
        load_key(environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    msg = str(ei.value)
    assert "keygen" in msg and "ECGSTREAM_TEMPLATE_KEY" in msg and "template-key" in msg
    assert isinstance(ei.value, KeyError) and isinstance(ei.value, TemplateError)
    assert not msg.startswith("'")


def test_load_key_bad_sources_do_not_fall_through(tmp_path):
    (tmp_path / "template-key").write_bytes(b"\x01" * 16)
    with pytest.raises(TemplateKeyError, match="credential"):
        load_key(environ={"CREDENTIALS_DIRECTORY": str(tmp_path), "ECGSTREAM_TEMPLATE_KEY": KEY.hex()})
    with pytest.raises(TemplateKeyError, match="ECGSTREAM_TEMPLATE_KEY"):
        load_key(environ={"ECGSTREAM_TEMPLATE_KEY": "abcd"})
    with pytest.raises(TemplateKeyError, match="does not exist.*keygen"):
        load_key(key_file=tmp_path / "missing", environ={})


def test_load_key_never_shows_the_key(tmp_path):
    secret = "Z" * 40
    with pytest.raises(TemplateKeyError) as ei:
        load_key(environ={"ECGSTREAM_TEMPLATE_KEY": secret})
    assert secret not in str(ei.value)


def test_create_key_file(tmp_path, caplog):
    p = tmp_path / "sub" / "template.key"
    with caplog.at_level(logging.DEBUG):
        create_key_file(p)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    key = load_key(key_file=p, environ={})
    assert len(key) == 32
    assert key.hex() not in caplog.text
    with pytest.raises(FileExistsError):
        create_key_file(p)
    assert load_key(key_file=p, environ={}) == key  # not overwritten
    other = tmp_path / "other.key"
    create_key_file(other)
    assert load_key(key_file=other, environ={}) != key


def test_store_with_created_key_round_trips(tmp_path):
    create_key_file(tmp_path / "k")
    s = TemplateStore(tmp_path / "t", load_key(key_file=tmp_path / "k", environ={}))
    s.save(make())
    assert s.load("alice") == make()
