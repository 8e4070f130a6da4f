"""Per-device message authentication (issue 11, part 1): wire forms, verifier, key store, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from ecgstream.sources.mqtt_payload import decode_payload, encode_binary, encode_json
from ecgstream.sources.mqtt_source import MqttSource
from ecgstream.trust.msgauth import DeviceKeyError, DeviceKeyStore, MessageVerifier

KEY = bytes(range(32))
OTHER = bytes(32)
NOW = 1_767_225_600.0
T = int(NOW * 1000)
X = np.array([0.1, -0.25, np.nan, 1.5, 0.0])


def _forms(key=KEY, device="strap1", seq=7, t_ms=T, x=X):
    return [encode_json(x, 500, seq, key=key, device=device, t_ms=t_ms),
            encode_binary(x, 500, seq, key=key, device=device, t_ms=t_ms),
            encode_binary(x, 500, seq, key=key, device=device, t_ms=t_ms, int16_scale=0.001)]


def _v(mode="keyed", keys=None):
    return MessageVerifier({"strap1": KEY} if keys is None else keys, mode, 30.0, wall=lambda: NOW)


@pytest.mark.parametrize("i", range(3))
def test_signed_forms_round_trip_and_verify(i):
    d = decode_payload(_forms()[i])
    assert d.t_ms == T and d.seq == 7 and len(d.mac) == 32
    assert np.isnan(d.samples[2])
    assert _v().check("strap1", d) is None


@pytest.mark.parametrize("i", range(3))
def test_forgeries_are_refused(i):
    v = _v()
    assert "wrong MAC" in v.check("strap1", decode_payload(_forms(key=OTHER)[i]))
    assert "wrong MAC" in v.check("strap1", decode_payload(_forms(device="strap2")[i]))  # for another device
    good = bytearray(_forms()[i])
    if good[:1] == b"{":
        tampered = bytes(good).replace(b"1.5", b"1.6")
    else:
        good[18] ^= 0x01  # a sample byte
        tampered = bytes(good)
    assert "wrong MAC" in v.check("strap1", decode_payload(tampered))
    assert v.rejected["bad_mac"] == 3


def test_replay_reorder_time_window_and_reboot():
    v = _v()
    a, b = decode_payload(_forms(seq=1)[0]), decode_payload(_forms(seq=2, t_ms=T + 100)[0])
    assert v.check("strap1", a) is None and v.check("strap1", b) is None
    assert "replayed" in v.check("strap1", b)
    assert "replayed" in v.check("strap1", a)  # older
    assert v.check("strap1", decode_payload(_forms(seq=0, t_ms=T + 200)[0])) is None  # reboot: later time
    assert "from the host's clock" in v.check("strap1", decode_payload(_forms(seq=9, t_ms=T - 31_000)[0]))
    assert "from the host's clock" in v.check("strap1", decode_payload(_forms(seq=9, t_ms=T + 31_000)[0]))
    assert v.rejected == {"replay": 2, "time": 2}


def test_modes_unsigned_and_unkeyed():
    unsigned = decode_payload(encode_json(X, 500, 1))
    assert "unsigned" in _v().check("strap1", unsigned)
    assert _v().check("strap9", unsigned) is None  # keyed mode: a device without a key may be unsigned
    assert "no message key" in _v("required").check("strap9", unsigned)
    assert _v("off").check("strap1", unsigned) is None


def test_source_counts_refusals_and_tells_the_daemon():
    src = MqttSource("mqtt://127.0.0.1:1/ecgstream/+/ecg")
    src.verifier = _v().check
    told = []
    src.on_untrusted = lambda dev, why: told.append((dev, why))
    assert src.handle("ecgstream/strap1/ecg", _forms(key=OTHER)[1], 0.0) is None
    assert src.stats.unauthenticated == 1 and told[0][0] == "strap1" and "MAC" in told[0][1]
    assert src.handle("ecgstream/strap1/ecg", _forms()[1], 0.0) is not None
    assert src.stats.chunks == 1


def test_malformed_signature_fields_are_corrupt():
    from ecgstream.sources.mqtt_payload import PayloadError

    for bad in (b'{"fs":500,"seq":1,"samples":[1],"t_ms":1,"mac":"zz"}',
                b'{"fs":500,"seq":1,"samples":[1],"t_ms":"1","mac":"' + b"0" * 64 + b'"}',
                b'{"fs":500,"seq":1,"samples":[1],"mac":"' + b"0" * 64 + b'"}'):
        with pytest.raises(PayloadError):
            decode_payload(bad)
    with pytest.raises(PayloadError):
        decode_payload(_forms()[1][:-1])  # a trailer one byte short


# -- keys ---------------------------------------------------------------------------------------
def test_key_store_modes_symlinks_and_renames(tmp_path):
    ks = DeviceKeyStore(tmp_path / "device-keys", OTHER)
    k = ks.add("strap1")
    assert ks.get("strap1") == k and ks.devices() == ["strap1"] and ks.get("nokey") is None
    assert (ks.directory.stat().st_mode & 0o777) == 0o700
    assert (ks.path_for("strap1").stat().st_mode & 0o777) == 0o600
    assert k not in ks.path_for("strap1").read_bytes()  # encrypted at rest
    with pytest.raises(DeviceKeyError, match="has a key already"):
        ks.add("strap1")
    os.rename(ks.path_for("strap1"), ks.path_for("strap2"))
    with pytest.raises(DeviceKeyError, match="authentication failed"):
        ks.get("strap2")
    os.symlink(ks.path_for("strap2"), ks.path_for("strap3"))
    with pytest.raises(DeviceKeyError, match="symbolic link"):
        ks.get("strap3")
    os.unlink(ks.path_for("strap3"))
    ks.add("strap4")
    os.chmod(ks.path_for("strap4"), 0o644)
    with pytest.raises(DeviceKeyError, match="group or others"):
        ks.get("strap4")
    with pytest.raises(DeviceKeyError, match="another template key"):
        DeviceKeyStore(ks.directory, KEY).get("strap2")
    with pytest.raises(ValueError):
        ks.add("../etc")


def test_concurrent_adds_of_one_device_one_wins(tmp_path):
    ks = DeviceKeyStore(tmp_path / "k", OTHER)
    ks.directory.mkdir(mode=0o700)
    won, lost = [], []

    def add() -> None:
        try:
            won.append(ks.add("strap1"))
        except DeviceKeyError:
            lost.append(1)

    ts = [threading.Thread(target=add) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(won) == 1 and len(lost) == 7 and ks.get("strap1") == won[0]
    assert not [p for p in ks.directory.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_device_key_cli(tmp_path):
    exe = [sys.executable, "-m", "ecgstream"]
    key = tmp_path / "t.key"
    assert subprocess.run([*exe, "keygen", str(key)], capture_output=True, timeout=60).returncode == 0
    store = ["--store", str(tmp_path / "templates"), "--key-file", str(key)]
    r = subprocess.run([*exe, "device-key", "add", "strap1", "--out", str(tmp_path / "w.key"), *store],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    hexkey = r.stdout.strip()
    assert (tmp_path / "w.key").read_text().strip() == hexkey and len(hexkey) == 64
    assert (tmp_path / "w.key").stat().st_mode & 0o777 == 0o600
    r = subprocess.run([*exe, "device-key", "list", *store], capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["strap1"]
    r = subprocess.run([*exe, "device-key", "add", "strap1", *store], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "has a key already" in r.stderr
    from ecgstream.templates import load_key

    ks = DeviceKeyStore(tmp_path / "device-keys", load_key(key_file=str(key)))
    assert ks.get("strap1").hex() == hexkey
