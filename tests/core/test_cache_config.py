"""CacheConfig: validation, immutability, environment variables, TOML files, copies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from modelcache import CacheConfig, ConfigError, ModelCacheError


def test_defaults() -> None:
    cfg = CacheConfig()
    assert cfg.embedder == "minilm"
    assert cfg.torch_threads == 1
    assert cfg.sql_url is None and cfg.chroma_url is None
    # thresholds left unset: the engine takes the embedder's calibrated ones
    assert cfg.similarity_threshold is None and cfg.similarity_threshold_long is None
    assert cfg.similarity_threshold_followup is None and cfg.context_threshold is None
    assert "prod" in cfg.environments


@pytest.mark.parametrize(
    "values",
    [
        {"similarity_threshold": 1.5},
        {"similarity_threshold": -1.01},
        {"similarity_threshold_long": 2},
        {"context_threshold": -3},
        {"similarity_threshold_followup": 1.2},
        {"top_k": 0},
        {"top_k": 1000},
        {"long_query_tokens": 0},
        {"torch_threads": 0},
        {"path": None},  # no embedded folder and no sql_url
        {"environments": ()},
        {"environments": ("prod", "")},
        {"embedder": ""},
        {"eviction": "random"},
        {"ttl_seconds": 0},
        {"ttl_seconds": float("inf")},  # accepted, then every insert failed on MariaDB
        {"ttl_seconds": float("nan")},
        {"low_water": 0},
        {"max_entries": 0},
        {"no_such_field": 1},
        {"similarity_threshold": "high"},
    ],
)
def test_invalid_values_are_rejected(values: dict[str, Any]) -> None:
    builders = [CacheConfig, CacheConfig.create, CacheConfig.from_env]
    if None not in values.values():  # load() reads None as "not given"
        builders.append(CacheConfig.load)
    for build in builders:
        with pytest.raises(ConfigError) as info:
            build(**values)
        assert isinstance(info.value, ModelCacheError) and isinstance(info.value, ValueError)


def test_boundaries_are_accepted() -> None:
    cfg = CacheConfig(similarity_threshold=-1.0, similarity_threshold_long=1.0, top_k=100)
    assert cfg.similarity_threshold == -1.0
    assert CacheConfig(path=None, sql_url="sqlite://").path is None
    assert CacheConfig(similarity_threshold=0).similarity_threshold == 0.0


def test_config_is_frozen() -> None:
    cfg = CacheConfig()
    with pytest.raises(ValidationError):
        cfg.similarity_threshold = 0.5  # type: ignore[misc]


def test_with_returns_a_validated_copy() -> None:
    cfg = CacheConfig(path="/tmp/a")
    other = cfg.with_(similarity_threshold=0.9, top_k=3)
    assert (other.similarity_threshold, other.top_k, other.path) == (0.9, 3, "/tmp/a")
    assert cfg.similarity_threshold is None
    with pytest.raises(ConfigError):
        cfg.with_(similarity_threshold=9)


def test_from_env_reads_prefixed_variables() -> None:
    environ = {
        "MODELCACHE_PATH": "/data/mc",
        "MODELCACHE_SIMILARITY_THRESHOLD": "0.91",
        "MODELCACHE_TOP_K": "7",
        "MODELCACHE_GUARD": "false",
        "MODELCACHE_TORCH_THREADS": "none",
        "MODELCACHE_ENVIRONMENTS": "dev, prod ,",
        "MODELCACHE_SQL_URL": "postgresql+psycopg://u@h/db",
        "UNRELATED": "x",
    }
    cfg = CacheConfig.from_env(environ)
    assert cfg.path == "/data/mc"
    assert cfg.similarity_threshold == 0.91
    assert cfg.top_k == 7
    assert cfg.guard is False
    assert cfg.torch_threads is None
    assert cfg.environments == ("dev", "prod")
    assert cfg.sql_url == "postgresql+psycopg://u@h/db"


def test_from_env_overrides_win_and_defaults_fill_in() -> None:
    cfg = CacheConfig.from_env({"MODELCACHE_TOP_K": "7"}, top_k=2)
    assert cfg.top_k == 2
    assert cfg == CacheConfig(top_k=2)


def test_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELCACHE_CONTEXT_THRESHOLD", "0.5")
    assert CacheConfig.from_env().context_threshold == 0.5


@pytest.mark.parametrize(
    "name, raw",
    [
        ("SIMILARITY_THRESHOLD", "1.7"),
        ("TOP_K", "many"),
        ("EVICTION", "random"),
        ("TTL_SECONDS", "inf"),
        ("TTL_SECONDS", "nan"),
    ],
)
def test_from_env_invalid_values_raise_config_error(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=f"environment variable MODELCACHE_{name} = "):
        CacheConfig.from_env({f"MODELCACHE_{name}": raw})


def test_from_toml_top_level_keys(tmp_path: Path) -> None:
    f = tmp_path / "mc.toml"
    f.write_text(
        'path = "/srv/mc"\nsimilarity_threshold = 0.93\nenvironments = ["dev", "prod"]\n',
        encoding="utf-8",
    )
    cfg = CacheConfig.from_toml(f)
    assert (cfg.path, cfg.similarity_threshold, cfg.environments) == (
        "/srv/mc",
        0.93,
        ("dev", "prod"),
    )


def test_from_toml_modelcache_table_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "pyproject.toml"
    f.write_text('[modelcache]\ntop_k = 4\nembedder = "fake"\n', encoding="utf-8")
    cfg = CacheConfig.from_toml(str(f), top_k=9)
    assert (cfg.top_k, cfg.embedder) == (9, "fake")


@pytest.mark.parametrize(
    "content",
    ["top_k = 0\n", "this is = not toml [\n", "[modelcache]\nunknown_knob = 1\n"],
)
def test_from_toml_errors_raise_config_error(tmp_path: Path, content: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError):
        CacheConfig.from_toml(f)


def test_from_toml_missing_file_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        CacheConfig.from_toml(tmp_path / "absent.toml")


def test_errors_name_the_environment_variable_and_the_allowed_values() -> None:
    with pytest.raises(ConfigError) as info:
        CacheConfig.from_env({"MODELCACHE_TOP_K": "abc"})
    message = str(info.value)
    assert "environment variable MODELCACHE_TOP_K = 'abc'" in message
    assert ">= 1" in message and "<= 100" in message
    with pytest.raises(ConfigError, match="one of 'lru', 'lfu', 'fifo', 'none'"):
        CacheConfig.load(environ={"MODELCACHE_EVICTION": "random"})


def test_errors_name_the_file_and_line_and_suggest_a_key(tmp_path: Path) -> None:
    f = tmp_path / "mc.toml"
    f.write_text("[server]\nport = 1\n\n[modelcache]\n# the top k\ntop_kk = 3\n", "utf-8")
    with pytest.raises(ConfigError, match=r"mc\.toml:6 \(top_kk\): unknown setting 'top_kk'; "
                       r"did you mean 'top_k'\?"):  # fmt: skip
        CacheConfig.load(f)
    f.write_text('embedder = "fake"\ntop_k = 300\n[server]\nport = 1\n', "utf-8")
    with pytest.raises(ConfigError, match=r"mc\.toml:2 \(top_k\) = 300"):
        CacheConfig.from_toml(f)
    f.write_text("[modelcach]\ntop_k = 3\n", "utf-8")
    with pytest.raises(
        ConfigError, match=r"unknown table \[modelcach\]; did you mean \[modelcache\]"
    ):
        CacheConfig.load(f)


def test_errors_name_arguments_and_hide_secrets() -> None:
    with pytest.raises(ConfigError, match="argument similarity_thresold: unknown setting"):
        CacheConfig(similarity_thresold=0.9)  # type: ignore[call-arg]
    with pytest.raises(ConfigError) as info:
        CacheConfig.from_env(
            {"MODELCACHE_SQL_URL": "mysql://u:s3cret@h/db", "MODELCACHE_TOP_K": "0"}
        )
    assert "s3cret" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        CacheConfig(sql_url=7)  # type: ignore[arg-type]
    assert "argument sql_url" in str(info.value)


def test_load_layers_file_then_environment_then_arguments(tmp_path: Path) -> None:
    f = tmp_path / "mc.toml"
    f.write_text('[modelcache]\ntop_k = 3\nembedder = "fake"\nguard = false\n', "utf-8")
    env = {"MODELCACHE_TOP_K": "4", "MODELCACHE_GUARD": "true"}
    assert CacheConfig.load(f).top_k == 3
    cfg = CacheConfig.load(f, env)
    assert (cfg.top_k, cfg.guard, cfg.embedder) == (4, True, "fake")
    cfg = CacheConfig.load(f, env, top_k=7, guard=None)  # None: an option left out
    assert (cfg.top_k, cfg.guard) == (7, True)


def test_check_env_returns_an_allowed_env_and_lists_the_allowed_ones() -> None:
    cfg = CacheConfig(environments=("blue", "green"))
    assert cfg.check_env("green") == "green"
    with pytest.raises(ConfigError, match=r"^unknown env 'qa'; allowed: blue, green$"):
        cfg.check_env("qa")
    with pytest.raises(ConfigError, match=r"^unknown env 'qa' \(--env\); allowed: blue, green$"):
        cfg.check_env("qa", "--env")


def test_from_env_and_from_toml_are_load_with_one_source(tmp_path: Path) -> None:
    f = tmp_path / "mc.toml"
    f.write_text("[modelcache]\ntop_k = 3\nlookup_timeout = 2.0\n", "utf-8")
    env = {"MODELCACHE_TOP_K": "4", "MODELCACHE_LOOKUP_TIMEOUT": "3"}
    assert CacheConfig.from_toml(f) == CacheConfig.load(f, {})
    assert CacheConfig.from_env(env) == CacheConfig.load(None, env)
    # None overrides: a value for from_env / from_toml (no deadline), "not given" for load
    assert CacheConfig.from_toml(f, lookup_timeout=None).lookup_timeout is None
    assert CacheConfig.from_env(env, lookup_timeout=None).lookup_timeout is None
    assert CacheConfig.load(f, env, lookup_timeout=None).lookup_timeout == 3.0
