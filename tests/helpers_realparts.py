"""Real parts for tests: pseudo-terminals, socat links, brokers, a source runner.

Import from a test module (pytest puts ``tests/`` on ``sys.path``)::

    from helpers_realparts import (Broker, PtyPair, SocatLink, SourceRunner,
                                   free_port, require_socat, wait_for)

* :class:`PtyPair`: an ``os.openpty()`` pair; write to ``master``, open
  ``path`` as the serial port. Closing the master is an unplug, but the
  path cannot come back: use :class:`SocatLink` for unplug and replug.
* :class:`SocatLink`: ``socat`` joining two pseudo-terminals behind fixed
  link paths (``dev`` for the reader, ``sim`` for the writer); ``unplug()``
  kills socat (the reader's reads fail, the links vanish), ``replug()``
  starts it again on the same paths.
* :class:`SourceRunner`: runs ``source.run(sink, stop)`` in a thread and
  keeps every chunk (and the exception, if ``run`` raised).
* :class:`Broker`, :func:`free_port`, :func:`wait_for`, :func:`wait_port`,
  :func:`require_mosquitto`: re-exported from :mod:`helpers_broker` (a real
  Mosquitto on a free port with its own temporary config, killable and
  restartable on the same port).

Also makes the repository root importable so ``tools.wearable_sim`` can be
imported when pytest is run as ``pytest`` rather than ``python -m pytest``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers_broker import Broker, free_port, require_mosquitto, wait_for, wait_port

__all__ = [
    "REPO",
    "Broker",
    "PtyPair",
    "SocatLink",
    "SourceRunner",
    "free_port",
    "require_mosquitto",
    "require_socat",
    "wait_for",
    "wait_port",
]

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SOCAT = shutil.which("socat")


def require_socat() -> str:
    """Return the socat binary, or skip the calling test (``apt-get install -y socat``)."""
    if SOCAT is None:
        pytest.skip("socat not installed (apt-get install -y socat)")
    return SOCAT


class PtyPair:
    """A pseudo-terminal pair from ``os.openpty()``, in raw mode.

    Attributes
    ----------
    master : int
        File descriptor the test writes to (the "wearable" side).
    path : str
        Path of the slave side (``/dev/pts/N``): the "serial port".
    """

    def __init__(self) -> None:
        import tty

        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)

    def write(self, data: bytes) -> None:
        """Write all of ``data`` to the master side."""
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view):]

    def close(self) -> None:
        """Close both sides (an unplug for a reader that has the path open)."""
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> PtyPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SocatLink:
    """Two pseudo-terminals joined by ``socat``, behind fixed link paths.

    Parameters
    ----------
    workdir : Path
        Where the links ``dev`` and ``sim`` are made.

    Attributes
    ----------
    dev : str
        Link the source opens (``serial:<dev>``).
    sim : str
        Link the simulator writes to.
    """

    def __init__(self, workdir: Path) -> None:
        self.socat = require_socat()
        self.dev = str(Path(workdir) / "dev")
        self.sim = str(Path(workdir) / "sim")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 5.0) -> SocatLink:
        """Start socat and wait until both links exist."""
        assert self.proc is None or self.proc.poll() is not None, "socat already running"
        self.proc = subprocess.Popen(
            [self.socat, f"pty,raw,echo=0,link={self.dev}", f"pty,raw,echo=0,link={self.sim}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ok = wait_for(lambda: os.path.exists(self.dev) and os.path.exists(self.sim), timeout_s)
        if not ok:
            self.unplug()
            raise RuntimeError("socat did not create its pty links")
        return self

    def unplug(self) -> None:
        """Kill socat (SIGKILL) and wait: the reader's next read fails; the links go.

        socat cannot remove its links when killed, so they are removed here,
        as udev removes ``/dev/ttyUSB0`` when a cable is pulled.
        """
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(5)
            if self.proc.stderr is not None:
                self.proc.stderr.close()
        for p in (self.dev, self.sim):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)

    def replug(self) -> None:
        """Start socat again on the same link paths."""
        self.unplug()
        self.start()

    def __enter__(self) -> SocatLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.unplug()


class SourceRunner:
    """Run ``source.run(sink, stop)`` in a thread and collect what it delivers.

    Parameters
    ----------
    source : ecgstream.sources.Source

    Attributes
    ----------
    chunks : list of SampleChunk
        Delivered so far (read under :attr:`lock` or via :meth:`snapshot`).
    error : BaseException or None
        What ``run`` raised, if anything.
    """

    def __init__(self, source: Any) -> None:
        self.source = source
        self.chunks: list[Any] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="source-under-test", daemon=True)

    def _sink(self, chunk: Any) -> None:
        with self.lock:
            self.chunks.append(chunk)

    def _run(self) -> None:
        try:
            self.source.run(self._sink, self.stop_event)
        except BaseException as exc:  # handed to the test
            self.error = exc

    def start(self) -> SourceRunner:
        self.thread.start()
        return self

    def snapshot(self) -> list[Any]:
        """A copy of the chunks delivered so far."""
        with self.lock:
            return list(self.chunks)

    def samples(self, device: str | None = None) -> int:
        """Samples delivered so far (of ``device``, or all)."""
        return sum(c.samples.size for c in self.snapshot() if device is None or c.device == device)

    def stop(self, timeout_s: float = 5.0) -> float:
        """Set ``stop``, join; return the seconds the source took to return."""
        t0 = time.monotonic()
        self.stop_event.set()
        self.thread.join(timeout_s)
        return time.monotonic() - t0

    def __enter__(self) -> SourceRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def enrol_with_cli(directory: Path, record: Path, subject: str = "p01") -> tuple[Path, Path]:
    """A real encrypted store in ``directory`` with ``subject`` enrolled from
    the WFDB ``record`` through the real CLI (``keygen`` then ``enroll``).

    Returns ``(store_dir, key_file)``.
    """
    exe = [sys.executable, "-m", "ecgstream"]
    key = directory / "template.key"
    r = subprocess.run([*exe, "keygen", str(key)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([*exe, "enroll", "--subject", subject, "--source", f"wfdb:{record}",
                        "--store", str(directory / "t"), "--key-file", str(key)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"enrolled {subject}" in r.stdout
    return directory / "t", key
