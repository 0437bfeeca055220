"""The environment of a Kubernetes workload identity: the variables the workload identity
webhook sets (and azure-identity reads), and what a profile takes from them.

Flow ``workload_identity`` takes from them what the profile leaves out when the profile is
loaded; flow ``managed_identity`` takes them when a token is needed, on a host where they are
all set.
"""

from __future__ import annotations

from ..profile import Profile

__all__ = [
    "ENV_AUTHORITY_HOST",
    "ENV_CLIENT_ID",
    "ENV_FEDERATED_TOKEN_FILE",
    "ENV_TENANT_ID",
    "workload_identity_for",
]

ENV_TENANT_ID = "AZURE_TENANT_ID"
ENV_CLIENT_ID = "AZURE_CLIENT_ID"
ENV_FEDERATED_TOKEN_FILE = "AZURE_FEDERATED_TOKEN_FILE"
ENV_AUTHORITY_HOST = "AZURE_AUTHORITY_HOST"
VARIABLES = (ENV_TENANT_ID, ENV_CLIENT_ID, ENV_FEDERATED_TOKEN_FILE, ENV_AUTHORITY_HOST)


def workload_identity_for(profile: Profile) -> Profile:
    """``profile`` (flow ``managed_identity``) made ready for the workload identity exchange, on
    a host where the workload identity webhook set ``$AZURE_TENANT_ID``, ``$AZURE_CLIENT_ID`` and
    ``$AZURE_FEDERATED_TOKEN_FILE``: tenant, client id (the profile's ``client_id`` wins over
    ``$AZURE_CLIENT_ID``), authority (``$AZURE_AUTHORITY_HOST``, else the public cloud) and the
    token file as client assertion, read now and checked like keys of the file."""
    from .. import config

    return config.workload_identity_for(profile)
