"""API-key authentication: each key belongs to one tenant and may only touch that tenant.

Without configured keys the service runs in local-only mode: it is bound to loopback by the
CLI, and as a second line of defence refuses clients whose address is not loopback. Open mode
(for trusted networks) serves clients of the allowed networks without a key, as
CodeFuse-ModelCache did; keys keep working beside it. Behind a reverse proxy, the client is
read from ``X-Forwarded-For`` only when the peer is a trusted proxy.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

from fastapi import Request

from .errors import ApiError, Codes, Kind
from .settings import ServerSettings, client_address, is_loopback

__all__ = ["Principal", "authenticate"]


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant bound by an API key, or ``None`` in local-only mode."""

    tenant: str | None

    def tenant_for(self, requested: str | None, default: str, kind: Kind) -> str:
        """The tenant a request acts on; a key may not name another tenant."""
        if self.tenant is None:
            return requested if requested is not None else default
        if requested is not None and requested != self.tenant:
            raise ApiError(
                403,
                Codes.UNAUTHORIZED,
                f"this API key belongs to tenant {self.tenant!r} and cannot use {requested!r}",
                kind,
            )
        return self.tenant

    def scope_tenant(self, requested: str | None) -> str | None:
        """Tenant filter for clear/stats: a key sees only its own; local mode may see all."""
        if self.tenant is None:
            return requested
        return self.tenant_for(requested, self.tenant, "rest")


def _presented_keys(request: Request) -> list[str]:
    keys = []
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        keys.append(token.strip())
    key = request.headers.get("x-api-key", "").strip()
    if key:
        keys.append(key)
    return keys


def _owner(settings: ServerSettings, presented: str) -> str | None:
    tenant = None
    for key, owner in settings.api_keys.items():  # compare every key: constant time per key
        if hmac.compare_digest(key.encode(), presented.encode()):
            tenant = owner
    return tenant


def authenticate(request: Request, settings: ServerSettings, kind: Kind) -> Principal:
    """Resolve the caller from ``Authorization: Bearer <key>`` and/or ``X-API-Key``.

    Without a key, a client is served (any tenant) only from an open-mode network or, when no
    key is configured at all, from this machine.
    """
    presented = _presented_keys(request)
    if presented and settings.api_keys:
        tenants = {_owner(settings, key) for key in presented}
        if None in tenants:
            raise ApiError(401, Codes.UNAUTHORIZED, "unknown API key", kind)
        if len(tenants) > 1:  # two headers naming different tenants: refuse, do not pick one
            raise ApiError(401, Codes.UNAUTHORIZED, "conflicting API keys", kind)
        return Principal(tenant=tenants.pop())
    peer = request.client.host if request.client else ""
    host = client_address(peer, request.headers.get("x-forwarded-for"), settings.trusted_proxies)
    if settings.client_allowed_without_key(host):
        return Principal(tenant=None)
    if not settings.api_keys:
        try:
            ipaddress.ip_address(host.strip("[]"))
            local = is_loopback(host)
        except ValueError:  # test transports and unix sockets carry no IP address
            local = True
        if local:
            return Principal(tenant=None)
        reason = (
            "this client's network is not in allowed_clients (open mode)"
            if settings.open_mode
            else "local-only mode (no API keys): loopback clients only"
        )
        raise ApiError(403, Codes.UNAUTHORIZED, reason, kind)
    raise ApiError(
        401,
        Codes.UNAUTHORIZED,
        "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
        kind,
    )
