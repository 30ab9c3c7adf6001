"""Store URLs: which Redis client a URL asks for. Kept apart from the client so the
config loader checks a URL at start without importing redis-py."""

from __future__ import annotations

from typing import Any


def _hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    out = []
    for part in netloc.split(","):
        host, _, port = part.strip().rpartition(":") if ":" in part else (part, "", "")
        host = host.strip("[]") or "127.0.0.1"
        out.append((host, int(port) if port else default_port))
    if not out:
        raise ValueError("no host")
    return out


def parse_url(url: str) -> tuple[str, dict[str, Any]]:
    """("single"|"cluster"|"sentinel", parts) of a store URL; ValueError if unusable.
    The config loader calls this too, so a bad URL is a config error at start."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("not a URL (want redis://, rediss://, unix://, "
                         "redis+cluster:// or redis+sentinel://)")
    if scheme in ("redis", "rediss", "unix"):
        return "single", {}
    if scheme not in ("redis+cluster", "rediss+cluster", "redis+sentinel",
                      "rediss+sentinel"):
        raise ValueError(f"unknown scheme {scheme}://")
    auth, _, hostpart = rest.rpartition("@")
    netloc, _, path = hostpart.partition("/")
    path, _, _query = path.partition("?")
    username, _, password = auth.partition(":") if auth else ("", "", "")
    parts: dict[str, Any] = {"hosts": _hosts(netloc, 26379 if "sentinel" in scheme else 6379),
                             "username": username or None, "password": password or None,
                             "ssl": scheme.startswith("rediss")}
    if "sentinel" in scheme:
        service, _, db = path.partition("/")
        if not service:
            raise ValueError("redis+sentinel:// needs /SERVICE (the sentinels' master name)")
        parts["service"] = service
        parts["db"] = int(db or "0")
        return "sentinel", parts
    if path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0")
    return "cluster", parts
