"""The unit files in systemd/: clean ``systemd-analyze verify``, exposure <= 2.0.

Needs ``systemd-analyze`` (Debian/Ubuntu package ``systemd``, version 250 or
newer for ``security --offline``); skipped with that reason when missing.

``systemd-analyze verify`` exits 0 on unknown keys and only prints them, so
these tests assert that it prints nothing at all. It also insists that the
ExecStart= program exists: the units start ``/usr/bin/env ecgstream ...``,
so verify checks ``/usr/bin/env`` and not the ``ecgstream`` script the PATH
finds at run time; :func:`test_execstart_flags_exist` covers the command line
against the CLI instead.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNITS = REPO / "systemd"
ANALYZE = shutil.which("systemd-analyze")
MAX_EXPOSURE = 2.0

needs_analyze = pytest.mark.skipif(ANALYZE is None,
                                   reason="systemd-analyze not installed (apt-get install -y systemd)")

# unit file -> the name it is verified under (a template is checked as an instance too)
CASES = {
    "ecgstream@.service": ["ecgstream@.service", "ecgstream@ttyUSB0.service"],
    "ecgstream-mqtt.service": ["ecgstream-mqtt.service"],
}


def _copy(tmp_path: Path, src: str, name: str) -> Path:
    dst = tmp_path / name
    shutil.copyfile(UNITS / src, dst)
    return dst


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([ANALYZE, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_units_present():
    assert sorted(p.name for p in UNITS.glob("*.service")) == sorted(CASES)


@needs_analyze
@pytest.mark.parametrize("src,name", [(s, n) for s, ns in CASES.items() for n in ns])
def test_verify_prints_nothing(tmp_path, src, name):
    path = _copy(tmp_path, src, name)
    p = _run("verify", "--man=no", f"./{path.name}", cwd=tmp_path)
    out = (p.stdout + p.stderr).strip()
    assert p.returncode == 0 and out == "", f"systemd-analyze verify {name}:\n{out}"


@needs_analyze
def test_verify_catches_a_typo(tmp_path):
    """The check can fail: an unknown key is reported (while the exit status stays 0)."""
    path = tmp_path / "ecgstream-mqtt.service"
    path.write_text((UNITS / "ecgstream-mqtt.service").read_text().replace("ProtectHome=", "ProtectHom="))
    p = _run("verify", "--man=no", f"./{path.name}", cwd=tmp_path)
    assert "ProtectHom" in p.stdout + p.stderr


def _exposure(tmp_path: Path, src: str, name: str) -> tuple[float, str]:
    path = _copy(tmp_path, src, name)
    p = _run("security", "--offline=yes", "--no-pager", f"./{path.name}", cwd=tmp_path)
    text = p.stdout + p.stderr
    if "--offline" in text and ("unrecognized" in text or "Unknown option" in text):
        pytest.skip("systemd-analyze too old for security --offline (needs systemd >= 250)")
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", text)
    assert m, f"no exposure level in the output of systemd-analyze security:\n{text}"
    return float(m.group(1)), text


@needs_analyze
@pytest.mark.parametrize("src,name", [("ecgstream@.service", "ecgstream@ttyUSB0.service"),
                                      ("ecgstream-mqtt.service", "ecgstream-mqtt.service")])
def test_security_exposure(tmp_path, src, name):
    level, text = _exposure(tmp_path, src, name)
    assert level <= MAX_EXPOSURE, f"{name}: exposure {level} > {MAX_EXPOSURE}\n{text}"


@needs_analyze
def test_security_check_can_fail(tmp_path):
    path = tmp_path / "bare.service"
    path.write_text("[Service]\nExecStart=/usr/bin/env true\n")
    p = _run("security", "--offline=yes", "--no-pager", "./bare.service", cwd=tmp_path)
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", p.stdout + p.stderr)
    if m is None:
        pytest.skip("systemd-analyze security --offline unavailable")
    assert float(m.group(1)) > MAX_EXPOSURE


def _unit(src: str) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in (UNITS / src).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            k, v = line.split("=", 1)
            keys.setdefault(k, []).append(v)
    return keys


@pytest.mark.parametrize("src", sorted(CASES))
def test_unit_contract(src):
    u = _unit(src)
    for key, value in [("Type", "notify"), ("NotifyAccess", "main"), ("Restart", "on-failure"),
                       ("RestartPreventExitStatus", "78"), ("DynamicUser", "yes"),
                       ("ProtectSystem", "strict"), ("NoNewPrivileges", "yes"), ("UMask", "0077")]:
        assert u.get(key) == [value], (src, key, u.get(key))
    assert "WatchdogSec" in u
    assert u["StateDirectory"] == ["ecgstream ecgstream/templates"]
    creds = {v.split(":", 1)[0] for v in u["LoadCredential"]}
    assert creds == {"template-key", "mqtt-password"}
    if src.startswith("ecgstream@"):
        assert u["SupplementaryGroups"] == ["dialout"] and u["DeviceAllow"] == ["/dev/%i rw"]
        assert u["DevicePolicy"] == ["closed"]
    else:
        assert u["PrivateDevices"] == ["yes"] and "SupplementaryGroups" not in u


@pytest.mark.parametrize("src", sorted(CASES))
def test_execstart_flags_exist(src):
    """Every --flag of ExecStart= is one `ecgstream run` accepts."""
    (cmd,) = _unit(src)["ExecStart"]
    argv = shlex.split(cmd)
    assert argv[:3] == ["/usr/bin/env", "ecgstream", "run"], argv
    flags = [a for a in argv if a.startswith("--")]
    p = subprocess.run([sys.executable, "-m", "ecgstream", "run", "--help"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    for f in flags:
        assert re.search(rf"(^|\s){re.escape(f)}\b", p.stdout), f"`ecgstream run` has no {f}"
