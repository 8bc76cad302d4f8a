"""configs/daemon.yaml validation: errors name the file and the field."""

from __future__ import annotations

import pytest
import yaml

from edgeprof.daemon.config import DaemonConfig, apply_overrides, config_from_dict, load_config
from edgeprof.errors import ConfigError
from edgeprof.paths import configs_dir


def test_shipped_config_is_valid_and_matches_the_defaults():
    cfg = load_config(configs_dir() / "daemon.yaml")
    assert cfg == DaemonConfig()


def test_empty_file_means_defaults(tmp_path):
    p = tmp_path / "d.yaml"
    p.write_text("")
    assert load_config(p) == DaemonConfig()


def test_error_names_file_and_field(tmp_path):
    p = tmp_path / "daemon.yaml"
    p.write_text(yaml.safe_dump({"session": {"max_queue": -1}}))
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert str(info.value) == "daemon.yaml: session.max_queue: must be a positive integer, got -1"


@pytest.mark.parametrize("raw,field", [
    ({"sesion": {}}, "sesion"),
    ({"session": {"max_qeue": 3}}, "session.max_qeue"),
    ({"session": {"on_overflow": "drop"}}, "session.on_overflow"),
    ({"session": {"max_ctx": 0}}, "session.max_ctx"),
    ({"session": {"max_ctx": 256, "sliding_window": 256}}, "session.sliding_window"),
    ({"session": {"reply_timeout_s": "soon"}}, "session.reply_timeout_s"),
    ({"session": {"overlap_host": "on"}}, "session.overlap_host"),
    ({"bridge": {"port": 70000}}, "bridge.port"),
    ({"bridge": {"port": True}}, "bridge.port"),
    ({"bridge": "localhost"}, "bridge"),
    ({"topics": {"tokens": "not a name!"}}, "topics.tokens"),
    ({"topics": {"tokens": "/edgeprof/request"}}, "topics"),
    ({"metrics": {"enabled": "yes"}}, "metrics.enabled"),
    ({"metrics": {"allow_remote": "yes"}}, "metrics.allow_remote"),
    ({"metrics": {"port": 9091}}, "metrics.port"),
    ({"runlog": {"flush_interval_s": 0}}, "runlog.flush_interval_s"),
    ({"model": ""}, "model"),
    ({"device": "tpu"}, "device"),
    ({"warmup_steps": -2}, "warmup_steps"),
    ({"identity": {"robot": "arm 01"}}, "identity.robot"),
    ({"identity": {"robot": ""}}, "identity.robot"),
    ({"identity": {"robot": "r" * 64}}, "identity.robot"),
    ({"identity": {"site": "-lab"}}, "identity.site"),
    ({"identity": {"site": 7}}, "identity.site"),
    ({"identity": {"team": "a"}}, "identity.team"),
])
def test_bad_values_name_their_field(raw, field):
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, "daemon.yaml")
    assert str(info.value).startswith(f"daemon.yaml: {field}: "), str(info.value)


def test_bad_yaml_and_missing_file(tmp_path):
    p = tmp_path / "daemon.yaml"
    p.write_text("session: [1, 2\n")
    with pytest.raises(ConfigError, match="daemon.yaml: is not valid YAML at line"):
        load_config(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_overrides():
    cfg = apply_overrides(DaemonConfig(), model="tiny-test", port=9100, metrics_port=0, runlog="none", max_ctx=128)
    assert cfg.model == "tiny-test" and cfg.bridge.port == 9100
    assert not cfg.metrics.enabled and not cfg.runlog.enabled and cfg.session.max_ctx == 128
    cfg = apply_overrides(DaemonConfig(), metrics_port=9500, runlog="x.db")
    assert cfg.metrics.enabled and cfg.metrics.port == 9500 and cfg.runlog.path == "x.db"
    with pytest.raises(ConfigError, match="--port"):
        apply_overrides(DaemonConfig(), port=0)
    assert apply_overrides(DaemonConfig(), max_ctx=100).session.max_ctx == 100  # the window is clamped later


def test_identity_labels():
    from edgeprof.daemon.config import IdentityConfig, identity_labels

    cfg = config_from_dict({"identity": {"robot": "arm-01", "site": "lab.b"}})
    assert identity_labels(cfg.identity) == {"robot": "arm-01", "site": "lab.b"}
    assert identity_labels(IdentityConfig(), hostname="Robot_7.example.org") == {"robot": "Robot_7"}
    assert identity_labels(IdentityConfig(), hostname="-weird host") == {"robot": "weird-host"}
    cfg = apply_overrides(DaemonConfig(), robot="arm-02", site="")
    assert cfg.identity.robot == "arm-02" and cfg.identity.site == ""
    with pytest.raises(ConfigError, match="--robot: must be 1-63 characters"):
        apply_overrides(DaemonConfig(), robot="a/b")
