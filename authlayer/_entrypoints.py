"""Listing a group's entry points, and naming the package one comes from, on every Python we
support (3.9's ``importlib.metadata`` has no ``entry_points(group=)`` and no ``EntryPoint.dist``).

Used by the registry (flows, secret sources) and by the stores (token store plugins).
"""

from __future__ import annotations

import sys
from importlib.metadata import Distribution, EntryPoint

__all__ = ["listed", "package"]

# Python 3.9: the distribution of each entry point listed, found while listing.
_dists: dict[EntryPoint, Distribution] = {}


def listed(group: str) -> list[EntryPoint]:
    """The installed entry points of ``group``, in the order the environment lists them."""
    from importlib.metadata import distributions, entry_points

    if sys.version_info >= (3, 10):
        return list(entry_points(group=group))
    found = []  # pragma: no cover - Python 3.9
    for dist in distributions():
        for ep in dist.entry_points:
            if ep.group == group:
                _dists[ep] = dist
                found.append(ep)
    return found


def package(ep: EntryPoint) -> str:
    """The package and version an entry point comes from, for messages."""
    dist = getattr(ep, "dist", None) or _dists.get(ep)
    if dist is None:
        return f"entry point {ep.value}"
    return f"package {dist.metadata['Name']} {dist.version}"
