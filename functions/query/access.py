"""Which sites (edge gateways) a request may see.

The local stand-in runs open (every registered site); the JWT scope and site
claims of the deployed API narrow this list.
"""

from __future__ import annotations

from query.store import IndexStore


def allowed_sites(store: IndexStore) -> list[str]:
    return store.sites()
