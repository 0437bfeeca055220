"""Finding, reading and validating the profiles file, and building :class:`Profile` values.

This package is the one place that knows the profiles file (CONTRACT §3 and §4):

* :mod:`._find`: where the file is (the ``config`` argument, ``$AUTHLAYER_CONFIG``, the user's
  config folder, never the working directory) and whether it may be trusted;
* :mod:`._layers`: reading and parsing it, its top level, remembered per file;
* :mod:`._keys`: the profile's keys and the messages about them;
* :mod:`._build`: one profile, from ``[defaults]``, ``extends`` and the call's overrides, checked
  against its flow's rules.

Every mistake becomes a :class:`ConfigError` that names the file, the profile and the key and
never quotes a secret. Names are imported lazily, so a flow may import the leaf modules
(:mod:`._keys`) without the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "AZURE_CLI_CLIENT_ID",
    "CLOUDS",
    "CONFIG_FILENAME",
    "ENV_AUTHORITY_HOST",
    "ENV_CLIENT_ID",
    "ENV_CONFIG",
    "ENV_FEDERATED_TOKEN_FILE",
    "ENV_PROFILE",
    "ENV_TENANT_ID",
    "INHERITED",
    "KEYS",
    "MAX_EXTENDS_DEPTH",
    "MAX_FILE_BYTES",
    "clear_cache",
    "config_path",
    "load_member",
    "load_profile",
    "load_profiles",
    "member_of",
    "profile_names",
    "with_tenant",
    "workload_identity_for",
]

if TYPE_CHECKING:
    from ..flows._workload_env import (
        ENV_AUTHORITY_HOST,
        ENV_CLIENT_ID,
        ENV_FEDERATED_TOKEN_FILE,
        ENV_TENANT_ID,
        workload_identity_for,
    )
    from ..flows.azure_cli import AZURE_CLI_CLIENT_ID
    from ._build import (
        INHERITED,
        MAX_EXTENDS_DEPTH,
        load_member,
        load_profile,
        load_profiles,
        member_of,
        profile_names,
        with_tenant,
    )
    from ._find import CONFIG_FILENAME, ENV_CONFIG, ENV_PROFILE, config_path
    from ._keys import CLOUDS, KEYS
    from ._layers import MAX_FILE_BYTES, clear_cache

_WHERE = {
    "AZURE_CLI_CLIENT_ID": "..flows.azure_cli",
    **dict.fromkeys(("ENV_AUTHORITY_HOST", "ENV_CLIENT_ID", "ENV_FEDERATED_TOKEN_FILE",
                     "ENV_TENANT_ID", "workload_identity_for"), "..flows._workload_env"),
    **dict.fromkeys(("INHERITED", "MAX_EXTENDS_DEPTH", "load_member", "load_profile",
                     "load_profiles", "member_of", "profile_names", "with_tenant"), "._build"),
    **dict.fromkeys(("CONFIG_FILENAME", "ENV_CONFIG", "ENV_PROFILE", "config_path"), "._find"),
    **dict.fromkeys(("CLOUDS", "KEYS"), "._keys"),
    **dict.fromkeys(("MAX_FILE_BYTES", "clear_cache"), "._layers"),
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
