"""Config loading: validation, line numbers, overrides, secrets, docs."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecgstream.config import (
    EXIT_CONFIG,
    SECTIONS,
    Config,
    ConfigError,
    ConfigProblem,
    DeviceConfig,
    MqttConfig,
    build_config,
    field_docs,
    load_config,
    resolve_secret,
)
from ecgstream.core.fields import defaults
from ecgstream.core.settings import DecisionConfig, LivenessConfig

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "ecg.toml") -> str:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(p)


def problems(path: str | None, overrides=None, **kw) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as ei:
        load_config(path, overrides or {}, **kw)
    return ei.value.problems


def by_key(ps: list[ConfigProblem]) -> dict[str, ConfigProblem]:
    return {p.key: p for p in ps}


GOOD = """\
[daemon]
source = "wfdb:data/rec_1"
model_threads = 2
speed = 0
log_level = "debug"
identify = false

[devices.strap1]
subject = "alice"
fs = 250

[devices."watch-2"]

[mqtt]
host = "broker.local"
username = "ecg"
password_env = "MQTT_PW"
tls = true
prefix = "home/ecg"

[templates]
key_credential = "tkey"

[decision]
window_beats = 12
min_beats = 6
threshold = 0.7

[liveness]
min_hr_bpm = 40
"""


# -- good configs -------------------------------------------------------------------
def test_defaults_without_file():
    cfg = load_config(None, {}, environ={})
    assert cfg == Config(daemon=cfg.daemon)
    assert cfg.daemon.store == "/var/lib/ecgstream/templates"
    assert cfg.mqtt.host == "" and cfg.mqtt.port == 1883
    assert cfg.decision == DecisionConfig() and cfg.liveness == LivenessConfig()
    assert EXIT_CONFIG == 78


def test_store_default_follows_state_directory():
    cfg = load_config(None, {}, environ={"STATE_DIRECTORY": "/var/lib/ecgstream:/other"})
    assert cfg.daemon.store == "/var/lib/ecgstream/templates"
    cfg = load_config(None, {}, environ={"STATE_DIRECTORY": "/srv/state"})
    assert cfg.daemon.store == "/srv/state/templates"


def test_good_config(tmp_path):
    cfg = load_config(write(tmp_path, GOOD), {}, environ={})
    assert cfg.daemon.source == "wfdb:data/rec_1"
    assert cfg.daemon.model_threads == 2 and cfg.daemon.speed == 0.0
    assert isinstance(cfg.daemon.speed, float)
    assert cfg.daemon.log_level == "DEBUG" and cfg.daemon.identify is False
    assert cfg.devices["strap1"] == DeviceConfig(subject="alice", fs=250.0)
    assert cfg.devices["watch-2"] == DeviceConfig()
    assert cfg.mqtt.port == 8883  # tls default port
    assert cfg.mqtt.prefix == "home/ecg"
    assert cfg.templates.key_credential == "tkey"
    assert cfg.decision == DecisionConfig(window_beats=12, min_beats=6, threshold=0.7)
    assert cfg.liveness.min_hr_bpm == 40.0
    assert cfg.warnings == ()


def test_example_config_is_valid():
    cfg = load_config(ROOT / "examples" / "ecgstream.toml", {}, environ={})
    assert cfg.devices["strap1"].subject == "alice"


def test_relative_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "m.tflite").write_bytes(b"x")
    sub = tmp_path / "conf"
    sub.mkdir()
    path = write(sub, '[daemon]\nmodel = "../m.tflite"\nstore = "tmpl"\n[templates]\nkey_file = "k"\n')
    cfg = load_config(path, {}, environ={})
    assert Path(cfg.daemon.model).resolve() == (tmp_path / "m.tflite").resolve()
    assert Path(cfg.daemon.store) == sub / "tmpl"
    assert Path(cfg.templates.key_file) == sub / "k"
    cfg = load_config(path, {"daemon.store": "rel"}, environ={})
    assert cfg.daemon.store == "rel"  # command line: relative to the working directory


# -- errors with keys and lines -----------------------------------------------------
BAD = """\
# line 1
[daemon]
source = "nope"
model_threads = 0
speeed = 2
queue_max_chunks = 1.5

[mqtt]
host = "mqtt://broker:1883"
port = "1883"
protocol = 5
password = "hunter2"
ca_file = "/nonexistent/ca.pem"

[decision]
min_beats = 50
window_beats = 10

[liveness]
min_hr_bpm = true
window_beats = 2

[devices.strap1]
subject = "../etc"
fs = 50
colour = "red"

[devices."bad id"]

[mqtx]
a = 1

[templates]
key_env = "1BAD"
"""


def test_every_problem_is_listed_with_key_and_line(tmp_path):
    path = write(tmp_path, BAD)
    ps = problems(path)
    got = {p.key: p.line for p in ps}
    want = {
        "daemon.source": 3,
        "daemon.model_threads": 4,
        "daemon.speeed": 5,
        "daemon.queue_max_chunks": 6,
        "mqtt.host": 9,
        "mqtt.port": 10,
        "mqtt.protocol": 11,
        "mqtt.ca_file": 13,
        "decision.min_beats": 16,
        "liveness.min_hr_bpm": 20,
        "devices.strap1.colour": 26,
        "devices.bad id": 28,
        "mqtx": 30,
        "templates.key_env": 34,
    }
    for key, line in want.items():
        assert got.get(key, "missing") == line, (key, got)
    assert all(p.origin == path for p in ps)
    text = str(ConfigError(ps))
    assert f"{path}:10: mqtt.port: expected an integer, got a string ('1883')" in text.splitlines()
    assert "hunter2" not in text
    # file order
    lines = [p.line for p in ps]
    assert lines == sorted(lines)


def test_values_checked_after_type_errors_in_other_keys(tmp_path):
    path = write(tmp_path, '[devices.s]\nsubject = "../etc"\nfs = 50\n')
    ks = by_key(problems(path))
    assert "invalid subject id" in ks["devices.s.subject"].message
    assert "100..1000" in ks["devices.s.fs"].message


def test_unknown_key_suggests(tmp_path):
    p = by_key(problems(write(tmp_path, "[mqtt]\nhots = 'x'\n")))["mqtt.hots"]
    assert p.line == 2 and "did you mean 'host'" in p.message
    p = by_key(problems(write(tmp_path, "[daemonn]\n")))["daemonn"]
    assert p.line == 1 and "[daemon]" in p.message


@pytest.mark.parametrize("text, key, line", [
    ("top = 1\n", "top", 1),
    ("[daemon]\nsource = 'wfdb:x'\n[daemon.sub]\nx = 1\n", "daemon.sub", 3),
    ("[devices.a]\nsubject = 'x'\nextra = 1\n", "devices.a.extra", 3),
    ("[devices]\nstrap = 5\n", "devices.strap", 2),
    ("daemon = 5\n", "daemon", 1),
    ("devices = [1, 2]\n", "devices", 1),
    ("[decision]\nfoo = 1\n", "decision.foo", 2),
    ("[liveness]\nbar = 1\n", "liveness.bar", 2),
    ("[templates]\nkey = 'x'\n", "templates.key", 2),
    ("[[mqtt]]\nhost = 'x'\n", "mqtt", 1),
    ("mqtt.port = 'x'\n", "mqtt.port", 1),
    ("[mqtt]\n  \"port\" = 'x'\n", "mqtt.port", 2),
])
def test_unknown_or_misplaced_keys_at_every_level(tmp_path, text, key, line):
    ps = by_key(problems(write(tmp_path, text)))
    assert key in ps, ps
    assert ps[key].line == line


@pytest.mark.parametrize("section, key, value, fragment", [
    ("daemon", "model_threads", "2.0", "integer"),
    ("daemon", "model_threads", "true", "integer"),
    ("daemon", "speed", "'fast'", "number"),
    ("daemon", "speed", "true", "number"),
    ("daemon", "speed", "nan", "finite"),
    ("daemon", "speed", "inf", "finite"),
    ("daemon", "identify", "1", "true or false"),
    ("daemon", "identify", "'yes'", "true or false"),
    ("daemon", "source", "5", "a string"),
    ("daemon", "source", "[1]", "a string"),
    ("daemon", "store", "{a = 1}", "a string"),
    ("daemon", "log_level", "'LOUD'", "one of"),
    ("daemon", "publish_interval_s", "0", "(0, 3600]"),
    ("daemon", "speed", "-1", ">= 0"),
    ("mqtt", "port", "70000", "1..65535"),
    ("mqtt", "keepalive", "1", "5..65535"),
    ("mqtt", "prefix", "'a/#'", "topic prefix"),
    ("mqtt", "prefix", "'/a'", "topic prefix"),
    ("mqtt", "on_connect_failure", "'crash'", "retry"),
    ("mqtt", "retry_max_s", "0", "(0, 86400]"),
    ("mqtt", "tls", "'true'", "true or false"),
    ("decision", "threshold", "'high'", "number or none"),
    ("decision", "threshold", "2.0", "cosine"),
    ("decision", "operating_point", "'far'", "operating_point"),
    ("liveness", "min_quality", "2", "min_quality"),
    ("daemon", "created", "1979-05-27T07:32:00Z", "unknown key"),
])
def test_type_and_range_errors(tmp_path, section, key, value, fragment):
    path = write(tmp_path, f"[{section}]\n{key} = {value}\n")
    ps = by_key(problems(path))
    assert f"{section}.{key}" in ps, ps
    p = ps[f"{section}.{key}"]
    assert fragment in p.message and p.line == 2
    assert str(p).startswith(f"{path}:2: {section}.{key}: ")


def test_cross_field_settings_error_points_at_a_key(tmp_path):
    path = write(tmp_path, "[liveness]\nmin_hr_bpm = 100\nmax_hr_bpm = 90\n")
    p = problems(path)[0]
    assert p.key == "liveness.min_hr_bpm" and p.line == 2
    path = write(tmp_path, "[decision]\n\nstale_s = -1\n")
    p = problems(path)[0]
    assert p.key == "decision.stale_s" and p.line == 3


@pytest.mark.parametrize("text, key, fragment", [
    ("[mqtt]\nusername = 'u'\npassword_env = 'A'\npassword_file = '{f}'\n", "mqtt.password_env", "one way"),
    ("[mqtt]\nusername = 'u'\npassword_env = 'A-B'\n", "mqtt.password_env", "environment variable"),
    ("[mqtt]\nusername = 'u'\npassword_credential = '../x'\n", "mqtt.password_credential", "credential"),
    ("[mqtt]\ncert_file = '{f}'\n", "mqtt.cert_file", "tls = true"),
    ("[mqtt]\ntls_insecure = true\n", "mqtt.tls_insecure", "tls = true"),
    ("[mqtt]\ntls = true\nkey_file = '{f}'\n", "mqtt.key_file", "needs cert_file"),
    ("[mqtt]\nusername = 'u'\npassword_file = 'missing.txt'\n", "mqtt.password_file", "no such file"),
    ("[daemon]\nmodel = 'missing.tflite'\n", "daemon.model", "no such file"),
    ("[templates]\nkey_credential = 'a/b'\n", "templates.key_credential", "credential"),
])
def test_mqtt_and_secret_consistency(tmp_path, text, key, fragment):
    f = tmp_path / "file.pem"
    f.write_text("x")
    ps = by_key(problems(write(tmp_path, text.format(f=f))))
    assert key in ps and fragment in ps[key].message, ps


def test_syntax_error_has_line(tmp_path):
    path = write(tmp_path, "[daemon]\nsource = 'x'\nspeed = \n")
    (p,) = problems(path)
    assert p.line == 3 and "not valid TOML" in p.message
    path = write(tmp_path, "[daemon]\n[daemon]\n")
    (p,) = problems(path)
    assert "not valid TOML" in p.message


def test_unreadable_files(tmp_path):
    (p,) = problems(str(tmp_path / "missing.toml"))
    assert "cannot read" in p.message and p.origin.endswith("missing.toml")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"# \xe9\n")
    (p,) = problems(str(bad))
    assert "cannot read" in p.message
    (p,) = problems(str(tmp_path))
    assert "cannot read" in p.message


def test_config_error_accepts_plain_strings():
    e = ConfigError(["daemon.source: no source given"])
    assert str(e) == "daemon.source: no source given"
    assert isinstance(e.problems[0], ConfigProblem)


# -- overrides ----------------------------------------------------------------------
def test_overrides_replace_file_values(tmp_path):
    path = write(tmp_path, GOOD)
    cfg = load_config(path, {"daemon.source": "serial:/dev/ttyUSB0", "daemon.speed": 4,
                             "mqtt.port": 1884, "devices.strap1.subject": "bob",
                             "devices.new.subject": "carol", "templates.key_file": "/k"}, environ={})
    assert cfg.daemon.source == "serial:/dev/ttyUSB0" and cfg.daemon.speed == 4.0
    assert cfg.mqtt.port == 1884
    assert cfg.devices["strap1"].subject == "bob" and cfg.devices["strap1"].fs == 250.0
    assert cfg.devices["new"].subject == "carol"
    assert cfg.templates.key_file == "/k"


def test_string_overrides_are_converted():
    cfg = load_config(None, {"daemon.speed": "2.5", "mqtt.port": "1885", "daemon.identify": "no",
                             "mqtt.host": "b"}, environ={})
    assert cfg.daemon.speed == 2.5 and cfg.mqtt.port == 1885 and cfg.daemon.identify is False


def test_bad_overrides_are_reported_as_command_line(tmp_path):
    path = write(tmp_path, GOOD)
    ps = by_key(problems(path, {"daemon.speed": "fast", "daemon.nope": 1, "nosection.x": 1,
                                "daemon": 1, "devices.x": 1, "mqtt.port": 0}))
    for key in ("daemon.speed", "daemon.nope", "nosection.x", "daemon", "devices.x", "mqtt.port"):
        assert key in ps, (key, ps)
        assert ps[key].origin == "command line" and ps[key].line is None
    assert str(ps["daemon.speed"]) == "command line: daemon.speed: expected a number, got 'fast'"


def test_mqtt_port_default_follows_tls_override():
    assert load_config(None, {"mqtt.tls": True}, environ={}).mqtt.port == 8883
    assert load_config(None, {"mqtt.tls": True, "mqtt.port": 1883}, environ={}).mqtt.port == 1883


# -- secrets ------------------------------------------------------------------------
def test_secret_from_file(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    path = write(tmp_path, f"[mqtt]\nhost = 'b'\nusername = 'u'\npassword_file = '{pw}'\n")
    cfg = load_config(path, {}, environ={})
    assert resolve_secret(cfg.mqtt, environ={}) == "s3cret"


def test_secret_from_env_and_credential(tmp_path):
    m = MqttConfig(username="u", password_env="PW")
    assert resolve_secret(m, environ={"PW": "from-env"}) == "from-env"
    (tmp_path / "mqtt-pw").write_text("from-cred")
    m = MqttConfig(username="u", password_credential="mqtt-pw")
    assert resolve_secret(m, environ={"CREDENTIALS_DIRECTORY": str(tmp_path)}) == "from-cred"
    assert resolve_secret(MqttConfig(), environ={}) is None
    assert resolve_secret(MqttConfig(username="u", password="inline"), environ={}) == "inline"


@pytest.mark.parametrize("kw, env, key, fragment", [
    ({"password_env": "PW"}, {}, "mqtt.password_env", "not set"),
    ({"password_credential": "c"}, {}, "mqtt.password_credential", "CREDENTIALS_DIRECTORY"),
    ({"password_credential": "c"}, {"CREDENTIALS_DIRECTORY": "/nonexistent"}, "mqtt.password_credential",
     "does not exist"),
    ({"password_file": "/nonexistent/pw"}, {}, "mqtt.password_file", "does not exist"),
])
def test_missing_secrets_name_the_key(kw, env, key, fragment):
    with pytest.raises(ConfigError) as ei:
        resolve_secret(MqttConfig(username="u", **kw), environ=env)
    (p,) = ei.value.problems
    assert p.key == key and fragment in p.message


def test_empty_secret_means_no_password(tmp_path):
    # The systemd units always load the mqtt-password credential: empty = none.
    (tmp_path / "pw").write_text("\n")
    assert resolve_secret(MqttConfig(username="u", password_file=str(tmp_path / "pw")), environ={}) is None
    m = MqttConfig(username="u", password_credential="pw")
    assert resolve_secret(m, environ={"CREDENTIALS_DIRECTORY": str(tmp_path)}) is None
    assert resolve_secret(MqttConfig(username="u", password_env="PW"), environ={"PW": ""}) is None


def test_password_without_username_warns(caplog):
    with caplog.at_level("WARNING", logger="ecgstream.config"):
        cfg = load_config(None, {"mqtt.password_credential": "mqtt-password"}, environ={})
    assert "username is empty" in caplog.text and cfg.warnings


def test_repr_hides_secrets_and_inline_password_warns(tmp_path, caplog):
    path = write(tmp_path, "[mqtt]\nhost = 'b'\nusername = 'u'\npassword = 'hunter2'\ntls = true\n")
    with caplog.at_level("WARNING", logger="ecgstream.config"):
        cfg = load_config(path, {}, environ={})
    assert cfg.mqtt.password == "hunter2"
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(cfg)
    assert "hunter2" not in caplog.text
    assert "password is inline" in caplog.text


# -- start-up: what a run does not use, it does not build --------------------------------
@pytest.mark.parametrize("cls", [*SECTIONS.values(), DeviceConfig])
def test_unbuilt_defaults_equal_validated_defaults(cls):
    d = defaults(cls)
    assert type(d) is cls and d == cls() and repr(d) == repr(cls())


def test_run_builds_only_the_sections_it_fills(tmp_path):
    # a fresh process, as `ecgstream run --source ... --store ... --key-file ...` starts
    code = textwrap.dedent("""
        import sys
        from ecgstream.config import load_config, loader
        cfg = load_config(None, {"daemon.source": "synthetic:", "daemon.speed": "1",
                                 "daemon.store": "s", "templates.key_file": "k"}, environ={})
        print(loader._adapter.cache_info().currsize, "importlib.metadata" in sys.modules)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.stdout.split() == ["2", "False"]  # [daemon] and [templates] validated; no plugin scan


# -- documentation ------------------------------------------------------------------
@pytest.mark.parametrize("cls", [*SECTIONS.values(), DeviceConfig])
def test_every_field_is_documented(cls):
    docs = field_docs(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    assert names <= set(docs), names - set(docs)
    assert all(docs[n][1] for n in names)


def test_config_reference_is_up_to_date():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_config_doc.py"), "--check"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


# -- fuzz: only ConfigError may come out ---------------------------------------------
_keys = st.sampled_from(["daemon", "mqtt", "templates", "decision", "liveness", "devices", "source",
                         "port", "speed", "subject", "fs", "tls", "host", "x", "min_beats",
                         "password", "username", "a b", ".", ""])
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
                     st.text(max_size=20), st.dates(), st.datetimes())
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=4)), max_leaves=12)


def _check_only_config_error(call) -> None:
    try:
        cfg = call()
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, ConfigProblem) for p in exc.problems)
        str(exc)
    else:
        assert isinstance(cfg, Config)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys, _values, max_size=5),
       st.dictionaries(st.sampled_from(["daemon.speed", "mqtt.port", "devices.a.fs", "x", "daemon.",
                                        "devices.a.b.c", "mqtt.tls"]), _values, max_size=2))
def test_fuzz_structures(data, overrides):
    _check_only_config_error(lambda: build_config(data, overrides=overrides, environ={}))


_lines = st.sampled_from(["[daemon]", "[mqtt]", "[devices.a]", "[[x]]", "source = 'wfdb:x'",
                          "port = 1883", "speed = -1", "tls = true", "fs = 250", 'x = """',
                          "'''", "a.b.c = 1", "= 1", "[", "]", "subject = 'alice'", "\\",
                          "threshold = nan", "key = { a = 1 }", "arr = [1, 'a']", "\x00", "é = 1"])


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(_lines, st.text(max_size=15)), max_size=12))
def test_fuzz_text(tmp_path, lines):
    p = tmp_path / "fuzz.toml"
    p.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass"))
    _check_only_config_error(lambda: load_config(str(p), {}, environ={}))


def test_fuzz_does_not_touch_the_environment_secret():
    # load_config never reads secrets; only resolve_secret does.
    env = dict(os.environ)
    load_config(None, {"mqtt.username": "u", "mqtt.password_env": "NOT_SET_ANYWHERE"}, environ={})
    assert dict(os.environ) == env
