import pytest
from pydantic import ValidationError

from farm.settings import Settings, hash_token


def test_yaml_then_env_then_overrides(tmp_path, monkeypatch):
    cfg = tmp_path / "farm.yaml"
    cfg.write_text(
        "pools: [default, gpu]\n"
        "lease: {lease_s: 20}\n"
        f"tenants: [{{name: team-a, token_sha256: {hash_token('a')}}}]\n"
        "executors: {count: 3}\n"
    )
    monkeypatch.setenv("FARM_EXECUTORS__COUNT", "5")
    s = Settings.load(cfg)
    assert s.pools == ["default", "gpu"] and s.lease.lease_s == 20 and s.executors.count == 5
    assert s.tenants[0].name == "team-a"
    assert Settings.load(cfg, pools=["x"], executors={"pool": "x"}).pools == ["x"]


def test_heartbeat_must_fit_the_lease():
    with pytest.raises(ValidationError):
        Settings.load(lease={"lease_s": 1, "heartbeat_s": 0.9})


def test_executor_pool_must_exist_and_unknown_keys_are_refused(tmp_path):
    with pytest.raises(ValidationError):
        Settings.load(executors={"pool": "nope"})
    cfg = tmp_path / "farm.yaml"
    cfg.write_text("colour: red\n")
    with pytest.raises(ValidationError):
        Settings.load(cfg)


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        Settings.load(tmp_path / "nope.yaml")
