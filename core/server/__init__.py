"""HTTP service: CodeFuse-ModelCache-compatible ``POST /modelcache`` plus a REST API.

Build it with :func:`create_app` over an open :class:`modelcache.Cache`; run it with
``modelcache serve`` or any ASGI server.
"""

from .app import create_app
from .settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
