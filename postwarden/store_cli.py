"""The store as a command-line tool uses it: opened, used once, closed, and one
`postwarden: error:` line on stderr when it cannot be opened or fails meanwhile."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from postwarden.config import StoreConfig
from postwarden.store import Store, StoreError, open_store

T = TypeVar("T")


def with_store(cfg: StoreConfig, work: Callable[[Store], T], failed: str,
               create: bool = True, readonly: bool = False) -> T | None:
    """work(store) on the configured store, which is closed afterwards. None after the
    error line when the store cannot be opened or work raised StoreError (`failed`
    says what could not be done); the caller then exits 1."""
    try:
        store = open_store(cfg, create=create, readonly=readonly)
    except StoreError as e:
        print(f"postwarden: error: store {cfg.backend} unavailable: {e}", file=sys.stderr)
        return None
    try:
        return work(store)
    except StoreError as e:
        print(f"postwarden: error: {failed}: {e}", file=sys.stderr)
        return None
    finally:
        try:
            store.close()
        except StoreError:
            pass
