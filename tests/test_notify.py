"""systemd notify protocol against a real unix datagram socket."""

from __future__ import annotations

import logging
import os
import socket

import pytest

from ecgstream.daemon.notify import SystemdNotifier


def _recv_all(sock: socket.socket) -> list[str]:
    out = []
    sock.settimeout(0.5)
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except (TimeoutError, BlockingIOError):
            return out
        sock.settimeout(0.05)


@pytest.fixture
def path_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    yield s, path
    s.close()


def test_messages_arrive_on_path_socket(path_socket, monkeypatch):
    sock, path = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    n = SystemdNotifier()
    assert n.enabled
    assert n.ready() and n.status("running\nfine") and n.watchdog() and n.stopping()
    assert _recv_all(sock) == ["READY=1", "STATUS=running fine", "WATCHDOG=1", "STOPPING=1"]


def test_abstract_socket():
    name = f"ecgstream-test-{os.getpid()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(b"\0" + name.encode())
    try:
        n = SystemdNotifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert _recv_all(s) == ["READY=1"]
    finally:
        s.close()


def test_unset_is_a_noop(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = SystemdNotifier()
    assert not n.enabled
    assert not any([n.ready(), n.status("x"), n.watchdog(), n.stopping()])
    assert n.watchdog_interval_s() is None


def test_send_failure_never_raises_and_logs_once(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="ecgstream.daemon.notify")
    n = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert n.ready() is False and n.stopping() is False and n.status("x") is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "failed" in warnings[0].getMessage()


def test_watchdog_interval_and_rate_limit(path_socket):
    sock, path = path_socket
    t = [100.0]
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}
    n = SystemdNotifier(env, clock=lambda: t[0])
    assert n.watchdog_interval_s() == 10.0
    assert n.watchdog()
    t[0] += 1.0
    assert not n.watchdog()  # the loop calls it often; at most every 2.5 s goes out
    t[0] += 2.0
    assert n.watchdog()
    assert n.watchdog(force=True)
    assert _recv_all(sock) == ["WATCHDOG=1"] * 3


def test_watchdog_for_another_pid_is_ignored():
    env = {"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert SystemdNotifier(env).watchdog_interval_s() is None
    assert SystemdNotifier({"WATCHDOG_USEC": "junk"}).watchdog_interval_s() is None
