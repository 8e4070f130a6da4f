"""Per-device message authentication of ECG chunks: keys and the verifier.

A broker account proves who *connected*; it does not prove that a chunk
comes from the wearable, if the account leaks (one password shared by a
fleet, a gateway compromised). With a per-device key, each chunk carries
its sender's time and an HMAC-SHA256 over device id, seq, time and samples
(the wire forms are in :mod:`ecgstream.sources.mqtt_payload`), and
:class:`MessageVerifier` accepts a chunk only when

1. the MAC is right for the device the topic names (a chunk signed for one
   device is never valid for another: the device id is inside the MAC);
2. its time ``t_ms`` is within ``window_s`` of the host's clock;
3. ``(t_ms, seq)`` is newer than that of the last chunk accepted from the
   device (replayed, duplicated or reordered chunks are refused; a reboot
   restarts ``seq`` at 0 with a later time, which is accepted).

A replay is therefore possible only of chunks younger than ``window_s`` that
no newer genuine chunk has overtaken, and only once; a restart of the
daemon forgets the last ``(t_ms, seq)``, so after a restart the window
bounds what may be replayed. The wearable needs a clock within
``window_s`` of the host's (SNTP).

Keys: 32 random bytes per device, made by ``ecgstream device-key add
DEVICE`` (printed once, for the wearable's firmware). The daemon keeps them
with the care of the templates: each in ``<dir>/<device>.dkey`` encrypted
and authenticated (AES-256-GCM) with the template key, the device id as
associated data (a file renamed to another device fails), written
atomically with mode 0600 in a directory of mode 0700, read without
following symbolic links. The directory is ``device-keys`` beside the
template store; the AES key is derived from the template key
(HMAC-SHA256 of it over a fixed label).

Modes (``[input] message_auth``): ``"keyed"`` (default): devices that have
a key must sign, others may send unsigned chunks; ``"required"``: every
chunk must be signed with a provisioned key; ``"off"``: no check.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..sources.mqtt_payload import DecodedChunk, compute_mac

__all__ = ["DeviceKeyError", "DeviceKeyStore", "MessageVerifier", "KEY_BYTES", "MODES"]

log = logging.getLogger("ecgstream.msgauth")  # the name its log lines have always carried

KEY_BYTES = 32
SUFFIX = ".dkey"
REGISTER = "keyed-devices.txt"
MODES = ("off", "keyed", "required")
_AAD = b"ecgstream-device-key-v1\0"
_DEVICE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_MAX_FILE = 1024


class DeviceKeyError(Exception):
    """A device key cannot be stored, read or is not valid; the message says which and why."""


def check_device(device: str) -> str:
    """``device`` if it is a valid device id (1-64 of letters, digits, ``_ . -``), else ValueError."""
    if not isinstance(device, str) or not _DEVICE_RE.fullmatch(device):
        raise ValueError(f"{device!r} is not a device id (1-64 letters, digits, _ . -; not starting with . or -)")
    return device


class DeviceKeyStore:
    """Encrypted per-device message keys (module docs).

    Parameters
    ----------
    directory : path
        Where the ``<device>.dkey`` files are.
    master_key : bytes
        The 32-byte template key (:func:`ecgstream.templates.load_key`).
    """

    def __init__(self, directory: str | os.PathLike[str], master_key: bytes) -> None:
        if len(master_key) != 32:
            raise ValueError("the master key must be 32 bytes")
        self.directory = Path(directory)
        # A key of its own, derived from the template key (one key, one purpose).
        self._aead = AESGCM(hmac.new(bytes(master_key), b"ecgstream device keys v1", "sha256").digest())

    @classmethod
    def for_config(cls, cfg: object) -> DeviceKeyStore:
        """The key store of a validated config: ``device-keys`` beside ``daemon.store``, the template key."""
        from ..templates import load_key

        t = cfg.templates  # type: ignore[attr-defined]
        key = load_key(key_file=t.key_file or None, key_env=t.key_env or None,
                       credential=t.key_credential or None)
        return cls(Path(cfg.daemon.store).parent / "device-keys", key)  # type: ignore[attr-defined]

    @property
    def register_path(self) -> Path:
        """``keyed-devices.txt``: every device given a key and not removed with :meth:`remove`, one a line."""
        return self.directory / REGISTER

    def _register(self) -> set[str] | None:
        try:
            text = self.register_path.read_text()
        except FileNotFoundError:
            return None
        return {ln.strip() for ln in text.splitlines() if _DEVICE_RE.fullmatch(ln.strip())}

    def _update_register(self, add: str | None = None, drop: str | None = None) -> None:
        """Add or drop one device, under an exclusive lock of the directory (concurrent adds)."""
        import fcntl

        dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(dfd, fcntl.LOCK_EX)
            reg = self._register()
            reg = set(self.devices()) if reg is None else reg
            if add:
                reg.add(add)
            if drop:
                reg.discard(drop)
            self._write_register(reg)
        finally:
            os.close(dfd)  # closing releases the lock

    def _write_register(self, devices: set[str]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".keyed.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write("".join(f"{d}\n" for d in sorted(devices)))
            os.replace(tmp, self.register_path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def vanished(self) -> list[str]:
        """Devices of the register whose key file is missing (issue 16: refused, never downgraded).

        A store made before the register existed gets one, of the keys it
        holds now, on the first call.
        """
        if not self.directory.is_dir():
            return []
        reg = self._register()
        have = set(self.devices())
        if reg is None:
            if have:
                self._write_register(have)
            return []
        return sorted(reg - have)

    def path_for(self, device: str) -> Path:
        return self.directory / f"{check_device(device)}{SUFFIX}"

    def devices(self) -> list[str]:
        """Devices that have a key (names only; nothing is decrypted)."""
        if not self.directory.is_dir():
            return []
        return sorted(p.name[:-len(SUFFIX)] for p in self.directory.iterdir()
                      if p.name.endswith(SUFFIX) and not p.name.startswith(".")
                      and _DEVICE_RE.fullmatch(p.name[:-len(SUFFIX)]))

    def add(self, device: str, replace: bool = False, out: str | os.PathLike[str] | None = None,
            key: bytes | None = None) -> bytes:
        """Make (or store the given) key for ``device``; return it.

        ``out``: also write it as hex to this new file (mode 0600; refused if
        it exists), for flashing into the wearable.
        """
        path = self.path_for(device)
        key = os.urandom(KEY_BYTES) if key is None else bytes(key)
        if len(key) != KEY_BYTES:
            raise DeviceKeyError(f"a device key is {KEY_BYTES} bytes")
        if not self.directory.is_dir():
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)
        nonce = os.urandom(12)
        blob = nonce + self._aead.encrypt(nonce, key, _AAD + device.encode())
        if out is not None:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(key.hex() + "\n")
        fd, tmp = tempfile.mkstemp(prefix=f".{device}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            if replace:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)  # atomic, never overwrites: two concurrent adds cannot both win
                except FileExistsError:
                    raise DeviceKeyError(f"device {device!r} has a key already (use --force to replace)") \
                        from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._update_register(add=device)
        return key

    def get(self, device: str) -> bytes | None:
        """The key of ``device``, None when it has none.

        Raises
        ------
        DeviceKeyError
            The file is a symbolic link or not a regular file, is readable by
            group or others, or fails authentication.
        """
        try:
            path = self.path_for(device)
        except ValueError:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DeviceKeyError(f"{path}: cannot open (a symbolic link?): {exc.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise DeviceKeyError(f"{path}: not a regular file")
            if st.st_mode & 0o077:
                raise DeviceKeyError(f"{path}: readable by group or others (mode {st.st_mode & 0o777:o}); "
                                     "chmod 600 it")
            blob = f.read(_MAX_FILE + 1)
        if len(blob) > _MAX_FILE or len(blob) < 12 + 16:
            raise DeviceKeyError(f"{path}: not a device key file")
        try:
            key = self._aead.decrypt(blob[:12], blob[12:], _AAD + device.encode())
        except InvalidTag:
            raise DeviceKeyError(f"{path}: authentication failed (modified, renamed, or another "
                                 "template key)") from None
        return key

    def remove(self, device: str) -> None:
        path = self.path_for(device)
        reg = self._register()
        try:
            path.unlink()
        except FileNotFoundError:
            if reg is None or device not in reg:
                raise DeviceKeyError(f"device {device!r} has no key") from None
        if reg is not None and device in reg:  # removed on purpose: no longer "vanished"
            self._update_register(drop=device)

    def load_all(self) -> dict[str, bytes]:
        """Every device's key; a damaged file is an error (fail closed: that device would be open)."""
        return {d: k for d in self.devices() if (k := self.get(d)) is not None}


class MessageVerifier:
    """Checks signed chunks (module docs); one per MQTT source, used on paho's thread.

    Parameters
    ----------
    keys : mapping of str to bytes
        Device id -> key.
    mode : {"off", "keyed", "required"}
    window_s : float
        Largest difference between a chunk's time and the host's, seconds.
    wall : callable
        Unix time in seconds (injectable).
    """

    def __init__(self, keys: Mapping[str, bytes], mode: str = "keyed", window_s: float = 30.0,
                 wall: Callable[[], float] = time.time, not_before_s: float | None = None,
                 vanished: frozenset[str] | set[str] = frozenset()) -> None:
        if mode not in MODES:
            raise ValueError(f"message_auth must be one of {', '.join(MODES)}")
        self.keys = dict(keys)
        #: Signed chunks made before this (the daemon's start, Unix seconds) are refused: a
        #: restart forgets the last (t_ms, seq), so chunks captured before it would replay.
        self.not_before_ms = None if not_before_s is None else int(not_before_s * 1000)
        #: Devices that had a key which is gone (DeviceKeyStore.vanished): refused in every mode
        #: but "off", never silently downgraded to unsigned.
        self.vanished = frozenset(vanished) - frozenset(self.keys)
        self.mode = mode
        self.window_ms = int(window_s * 1000)
        self.wall = wall
        self._last: dict[str, tuple[int, int]] = {}  # device -> (t_ms, seq) of the last accepted chunk
        self.rejected: dict[str, int] = {}  # reason kind -> count

    def check(self, device: str, d: DecodedChunk) -> str | None:
        """None when ``d`` may be used; else the reason, in words (and counted)."""
        if self.mode == "off":
            return None
        key = self.keys.get(device)
        if key is None:
            if device in self.vanished:
                return self._no("key_vanished", "this device had a message key that has vanished (its key "
                                "file is missing): refused; `ecgstream device-key remove` it if intended")
            if self.mode == "required":
                return self._no("no_key", "no message key is provisioned for this device")
            return None
        if d.mac is None or d.signed is None or d.t_ms is None:
            return self._no("unsigned", "unsigned chunk from a device that has a message key")
        if not hmac.compare_digest(compute_mac(key, device, d.signed), d.mac):
            return self._no("bad_mac", "wrong MAC (forged, altered, or signed for another device)")
        now_ms = int(self.wall() * 1000)
        if abs(d.t_ms - now_ms) > self.window_ms:
            return self._no("time", f"chunk time {(d.t_ms - now_ms) / 1000:+.1f} s from the host's clock "
                            f"(window {self.window_ms / 1000:.0f} s)")
        if self.not_before_ms is not None and d.t_ms < self.not_before_ms:
            return self._no("before_start", f"chunk made {(self.not_before_ms - d.t_ms) / 1000:.1f} s before the "
                            "daemon started (a capture replayed after a restart?)")
        last = self._last.get(device)
        if last is not None and (d.t_ms, d.seq) <= last:
            return self._no("replay", f"replayed or reordered chunk (seq {d.seq}, t_ms {d.t_ms} not after "
                            f"seq {last[1]}, t_ms {last[0]})")
        self._last[device] = (d.t_ms, d.seq)
        return None

    def _no(self, kind: str, reason: str) -> str:
        self.rejected[kind] = self.rejected.get(kind, 0) + 1
        return reason
