"""docs/configuration.md must match CacheConfig: a drift check on the generated table."""

from __future__ import annotations

import config_reference

from modelcache import CacheConfig


def test_reference_table_matches_cacheconfig() -> None:
    page = config_reference.DOC.read_text(encoding="utf-8")
    assert config_reference.render(page) == page, (
        "docs/configuration.md is out of date with CacheConfig; "
        "run `.venv/bin/python tests/docs/config_reference.py` and commit the page"
    )


def test_every_setting_has_a_documented_environment_variable() -> None:
    page = config_reference.DOC.read_text(encoding="utf-8")
    for name, info in CacheConfig.model_fields.items():
        assert f"| `{name}` |" in page
        assert f"`MODELCACHE_{name.upper()}`" in page
        assert info.description, f"CacheConfig.{name} has no description to document"


def test_documented_variables_are_the_ones_from_env_reads() -> None:
    config = CacheConfig.from_env(
        {
            "MODELCACHE_TOP_K": "7",
            "MODELCACHE_GUARD": "false",
            "MODELCACHE_TTL_SECONDS": "none",
            "MODELCACHE_ENVIRONMENTS": "dev,prod",
        }
    )
    assert config.top_k == 7
    assert config.guard is False
    assert config.ttl_seconds is None
    assert config.environments == ("dev", "prod")
