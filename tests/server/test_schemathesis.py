"""Property-based run of the OpenAPI schema: no input may produce a server error.

The schema is loaded once from an app over a stand-in cache (schema building does no I/O);
every generated case is sent to the real app over a fresh cache. (schemathesis' lazy
``from_fixture`` loader does not work with pytest 9, hence this arrangement.)
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import hypothesis
import schemathesis
from fastapi import FastAPI
from schemathesis.specs.openapi.checks import positive_data_acceptance

from modelcache import CacheConfig
from modelcache.server import ServerSettings, create_app

_stand_in: Any = SimpleNamespace(config=CacheConfig(path=None, sql_url="sqlite://"))
schema = schemathesis.openapi.from_dict(create_app(_stand_in, ServerSettings()).openapi())


@schema.parametrize()
@hypothesis.settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=True,
)
def test_api_conforms(case: schemathesis.Case, app: FastAPI) -> None:
    excluded = []
    if case.path == "/modelcache":
        # The envelope also accepts a JSON *string* body and needs a message list ending in a
        # user turn: neither is expressible in JSON Schema, so schema-valid input may be refused.
        excluded.append(positive_data_acceptance)
    case.call_and_validate(app=app, excluded_checks=excluded)
