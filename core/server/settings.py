"""ServerSettings: what the HTTP front end needs beyond the cache config (keys, limits, bind).

Read at the edge from ``MODELCACHE_*`` variables and/or a TOML file (a ``[server]`` table),
then passed to :func:`modelcache.server.create_app` as an immutable value.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from ..config import _build, _load, _Settings
from ..errors import ConfigError
from ..request import check_name

__all__ = ["ServerSettings", "client_address", "is_loopback", "parse_api_keys"]


def parse_api_keys(raw: str) -> dict[str, str]:
    """Parse ``"key1:tenantA,key2:tenantB"`` into ``{key: tenant}``; a bad entry is named by
    its position, never quoted (it holds a secret).

    A key given twice with different tenants is refused: which tenant it acts for would
    depend on the order of the list.
    """
    keys: dict[str, str] = {}
    for number, item in enumerate(raw.split(","), 1):
        item = item.strip()
        if not item:
            continue
        key, sep, tenant = item.rpartition(":")
        if not sep or not key.strip() or not tenant.strip():
            raise ConfigError(f"API key entry {number} must look like 'key:tenant'")
        key, tenant = key.strip(), tenant.strip()
        if keys.get(key, tenant) != tenant:
            raise ConfigError(
                f"API key entry {number} repeats an earlier key with another tenant; "
                "a key acts for one tenant"
            )
        keys[key] = tenant
    return keys


def _as_keys(value: Any) -> Any:
    """API keys as ``{key: tenant}`` from ``key:tenant,…`` text or a list of such entries."""
    if isinstance(value, str):
        return parse_api_keys(value)
    if isinstance(value, list):
        return parse_api_keys(",".join(str(k) for k in value))
    return value


def _add_keys(key: str, earlier: Any, later: Any) -> Any:
    """A later layer's API keys add to (and override) the earlier ones; other settings win."""
    if key != "api_keys":
        return later
    before, after = _as_keys(earlier), _as_keys(later)
    return {**before, **after} if isinstance(before, dict) and isinstance(after, dict) else after


def _in_networks(address: str, networks: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:10.0.0.5 on a dual-stack socket is 10.0.0.5
    return any(ip in ipaddress.ip_network(net, strict=False) for net in networks)


def client_address(peer: str, forwarded_for: str | None, trusted_proxies: tuple[str, ...]) -> str:
    """The real client: the peer, or through trusted proxies the last untrusted hop.

    X-Forwarded-For is appended to by each proxy, so it is read from the right and only hops
    added by trusted proxies are believed; a client cannot spoof its way past them.
    """
    address = peer
    if not forwarded_for or not _in_networks(peer, trusted_proxies):
        return address
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        address = hop
        if not _in_networks(hop, trusted_proxies):
            break
    return address


def is_loopback(host: str) -> bool:
    """True for addresses that only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ServerSettings(_Settings):
    """Typed, immutable settings of the HTTP service."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_keys: dict[str, str] = Field(
        default_factory=dict,
        description="API key -> tenant. Empty: local-only mode (loopback bind, any tenant).",
    )
    host: str = Field(default="127.0.0.1", description="Bind address of `modelcache serve`.")
    port: int = Field(default=8000, ge=0, le=65535, description="Bind port.")
    max_body_bytes: int = Field(
        default=1_048_576, ge=1, description="Requests with a larger body get 413."
    )
    default_tenant: str = Field(default="default", min_length=1)
    default_env: str = Field(default="prod", min_length=1)
    allowed_models: tuple[str, ...] | None = Field(
        default=None, description="If set, only these model names are served (else any)."
    )
    blocked_models: tuple[str, ...] = Field(
        default=(), description="Model names refused (ModelCache's blacklist: code 105/305)."
    )
    admin_key: str | None = Field(
        default=None,
        description="If set, /metrics needs it (Authorization: Bearer or X-API-Key).",
    )
    metrics_tenant_labels: bool = Field(
        default=False,
        description="Add modelcache_scope_entries{tenant, env, model} to /metrics.",
    )
    metrics_max_age: float = Field(
        default=15.0, ge=0, description="Seconds a /metrics store reading is reused."
    )
    open_mode: bool = Field(
        default=False,
        description="Trusted-network mode: clients in allowed_clients need no API key and may "
        "use any tenant (existing ModelCache clients work unchanged). Keys still work.",
    )
    allowed_clients: tuple[str, ...] = Field(
        default=(), description="Open mode: client networks (CIDR) served without a key."
    )
    trusted_proxies: tuple[str, ...] = Field(
        default=(),
        description="Reverse proxies (CIDR) whose X-Forwarded-For names the real client.",
    )

    @field_validator("allowed_clients", "trusted_proxies")
    @classmethod
    def _check_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for net in value:
            try:
                ipaddress.ip_network(net.strip(), strict=False)
            except ValueError as exc:
                raise ValueError(f"{net!r} is not an IP network (e.g. 10.0.0.0/8): {exc}") from exc
        return tuple(n.strip() for n in value)

    @model_validator(mode="after")
    def _check_open_mode(self) -> ServerSettings:
        if self.open_mode and not self.allowed_clients:
            raise ValueError(
                "open_mode needs allowed_clients, the trusted networks (e.g. 10.0.0.0/8); "
                "0.0.0.0/0 and ::/0 allow any client"
            )
        if self.allowed_clients and not self.open_mode:
            raise ValueError("allowed_clients is only used with open_mode = true")
        if self.metrics_tenant_labels and not self.local_only and self.admin_key is None:
            raise ValueError(
                "metrics_tenant_labels names every tenant and model on /metrics, which needs "
                "no API key: set admin_key too (then /metrics needs it), or turn the labels off"
            )
        return self

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_keys(cls, value: Any) -> Any:
        """Keys may come as ``MODELCACHE_API_KEYS`` text or a TOML list of ``key:tenant``."""
        return _as_keys(value)

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, value: dict[str, str]) -> dict[str, str]:
        """Keys non-empty and tenants valid scope names (checked here, not at each request)."""
        for number, (key, tenant) in enumerate(value.items(), 1):
            if not key.strip() or not tenant.strip():
                raise ValueError("API keys and tenants must be non-empty strings")
            try:
                check_name("tenant", tenant)
            except ConfigError as exc:
                raise ValueError(f"the tenant of API key {number}: {exc}") from None
        return value

    @property
    def local_only(self) -> bool:
        """No API key and no open mode: the service must only listen on loopback."""
        return not self.api_keys and not self.open_mode

    def client_allowed_without_key(self, address: str) -> bool:
        """Open mode: whether a client address is in one of the allowed networks."""
        return self.open_mode and _in_networks(address, self.allowed_clients)

    def check_bind(self, host: str) -> None:
        """Refuse to expose a key-less service beyond this machine."""
        if self.local_only and not is_loopback(host):
            raise ConfigError(
                f"refusing to bind {host}: no API keys are configured (local-only mode). "
                "Set MODELCACHE_API_KEYS='key:tenant,...' or [server].api_keys, enable open mode "
                "for a trusted network (MODELCACHE_OPEN_MODE=1 and MODELCACHE_ALLOWED_CLIENTS), "
                "or bind 127.0.0.1."
            )

    # ---- constructors at the edges ----------------------------------------------------------
    @classmethod
    def create(cls, **values: Any) -> ServerSettings:
        """Build settings from keyword arguments (the same as calling the class)."""
        return _build(cls, values, {})

    @classmethod
    def load(
        cls,
        toml_path: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> ServerSettings:
        """TOML ``[server]`` table < ``MODELCACHE_*`` variables < arguments (``None``: not given),
        the layering of :meth:`CacheConfig.load <modelcache.CacheConfig.load>`, with two rules
        of its own: ``MODELCACHE_API_KEYS`` adds to (and overrides) the file's keys, and an
        empty variable counts as unset, not None, so that an empty secret cannot switch off
        an ``admin_key`` the file sets.
        """
        given = {k: v for k, v in overrides.items() if v is not None}
        return _load(
            cls,
            toml_path,
            environ,
            given,
            table="server",
            empty_is_none=False,
            combine=_add_keys,
        )
