"""The environment of a Kubernetes workload identity: the variables the workload identity
webhook sets (and azure-identity reads), and what a profile takes from them.

Flow ``workload_identity`` takes from them what the profile leaves out when the profile is
loaded (:func:`prepare`, its spec's ``prepare``); flow ``managed_identity`` takes them when a
token is needed, on a host where they are all set (:func:`workload_identity_for`). Either way
the values are checked like keys of the profiles file, and messages name the variable.
"""

from __future__ import annotations

import os
from typing import Any

from .._record import replace
from ..config._keys import BY_NAME, Values, parse_values
from ..profile import DEFAULT_AUTHORITY, Profile, SecretSource

__all__ = [
    "ENV_AUTHORITY_HOST",
    "ENV_CLIENT_ID",
    "ENV_FEDERATED_TOKEN_FILE",
    "ENV_TENANT_ID",
    "authority_from_env",
    "prepare",
    "workload_identity_for",
]

ENV_TENANT_ID = "AZURE_TENANT_ID"
ENV_CLIENT_ID = "AZURE_CLIENT_ID"
ENV_FEDERATED_TOKEN_FILE = "AZURE_FEDERATED_TOKEN_FILE"
ENV_AUTHORITY_HOST = "AZURE_AUTHORITY_HOST"

_FILLED = tuple(BY_NAME[k] for k in ("tenant", "client_id", "authority"))


def prepare(values: Values) -> dict[str, Any]:
    """Fill what a workload identity profile leaves out from the environment: tenant,
    client_id and authority (unless cloud is set); return the token file as the client
    assertion when the profile sets none. Read when the profile is loaded, so that the profile
    is complete and cache keys tell apps apart.

    The variables win over ``[defaults]``: they are what the platform says about this very
    workload. Only keys in the profile (or what it ``extends``) win over them."""
    for key, name in (("tenant", ENV_TENANT_ID), ("client_id", ENV_CLIENT_ID)):
        if values.open_to_env(key):
            found = values.env(name)
            if found:
                values.set(key, found, f"from ${name}")
    authority_from_env(values)
    token_file = values.env(ENV_FEDERATED_TOKEN_FILE)
    if not token_file or not values.open_to_env("client_assertion"):
        return {}
    values.pop("client_assertion")
    # The variable's name is the source's key, so that errors name it.
    path = os.path.abspath(os.path.expanduser(token_file))
    source = SecretSource("file", path, key=ENV_FEDERATED_TOKEN_FILE, profile=values.profile,
                          path=values.path)
    return {"client_assertion": source}


def authority_from_env(values: Values) -> dict[str, Any]:
    """``$AZURE_AUTHORITY_HOST`` as the authority, unless the profile (or what it extends)
    sets ``authority`` or ``cloud`` (flows ``workload_identity`` and ``auto``)."""
    host = values.env(ENV_AUTHORITY_HOST)
    if host and values.open_to_env("authority", "cloud"):
        # azure-identity accepts a bare host name here
        values.pop("cloud")
        values.set("authority", host if "://" in host else f"https://{host}",
                   f"from ${ENV_AUTHORITY_HOST}")
    return {}


def workload_identity_for(profile: Profile) -> Profile:
    """``profile`` (flow ``managed_identity``) made ready for the workload identity exchange, on
    a host where the workload identity webhook set ``$AZURE_TENANT_ID``, ``$AZURE_CLIENT_ID`` and
    ``$AZURE_FEDERATED_TOKEN_FILE``: tenant, client id (the profile's ``client_id`` wins over
    ``$AZURE_CLIENT_ID``), authority (``$AZURE_AUTHORITY_HOST``, else the public cloud) and the
    token file as client assertion, read now and checked like keys of the file."""
    values = Values(profile.config_path, profile.name)
    if profile.client_id:
        values.set("client_id", profile.client_id, "")
    prepared = prepare(values)
    fields = parse_values(values, None, _FILLED)
    return replace(profile, tenant=fields.get("tenant"), client_id=fields.get("client_id"),
                   authority=fields.get("authority", DEFAULT_AUTHORITY),
                   client_assertion=prepared.get("client_assertion"))
