"""Workload identity: client credentials with a federated token the platform hands the workload
(a Kubernetes service account token, say) as the client assertion.

The profile is complete when it reaches this module: :mod:`authlayer.config` fills ``tenant``,
``client_id``, ``authority`` and the token file from ``AZURE_TENANT_ID``, ``AZURE_CLIENT_ID``,
``AZURE_AUTHORITY_HOST`` and ``AZURE_FEDERATED_TOKEN_FILE`` when the profile (and what it
extends) leaves them out — over ``[defaults]`` — so that cache keys tell two apps apart. This
module checks that nothing is missing, reads the token file again for every token request (the
platform rotates it) and sends the grant; the token request is :mod:`authlayer.oauth`'s. Flow
``managed_identity`` comes here too on a host with workload identity, as azure-identity does.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any, Optional

from .._actions import Action
from ..errors import ConfigError
from ..oauth import ASSERTION_TYPE, exchange, read_secret
from ..profile import Profile
from ..token import TokenResult
from . import FlowContext
from ._workload_env import ENV_CLIENT_ID, ENV_FEDERATED_TOKEN_FILE, ENV_TENANT_ID

__all__ = ["acquire", "available"]


def acquire(ctx: FlowContext) -> Generator[Action, Any, TokenResult]:
    """Exchange the federated token for an access token for the profile's scope."""
    profile = ctx.profile
    for key, variable in (("tenant", ENV_TENANT_ID), ("client_id", ENV_CLIENT_ID)):
        if not getattr(profile, key):
            raise profile.config_error(
                f"{key} is missing: flow 'workload_identity' takes it from the profile's {key} "
                f"or from ${variable} (which the workload identity webhook sets)",
                key=key,
            )
    source = profile.client_assertion
    if source is None:
        raise profile.config_error(
            "no federated token: flow 'workload_identity' reads the file named by "
            f"${ENV_FEDERATED_TOKEN_FILE} (which the workload identity webhook sets), or the "
            "profile's client_assertion",
            key="client_assertion",
        )
    try:
        assertion = yield from read_secret(source)
    except ConfigError as exc:
        if source.key != ENV_FEDERATED_TOKEN_FILE:
            raise
        raise profile.config_error(
            f"the federated token: {exc.reason} (the path is ${ENV_FEDERATED_TOKEN_FILE}); in "
            "Kubernetes, is the pod's service account set up for workload identity "
            '(label azure.workload.identity/use: "true")?'
        ) from None
    assert profile.client_id is not None
    form = {
        "grant_type": "client_credentials",
        "client_id": profile.client_id,
        "scope": profile.scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion.strip(),
    }
    return (yield from exchange(ctx, form, authenticate=False))


def available(profile: Profile) -> Optional[str]:
    """``None`` when the profile has its tenant, client id and federated token (a token file
    that exists; another kind of assertion answers for itself), else why not."""
    for key, variable in (("tenant", ENV_TENANT_ID), ("client_id", ENV_CLIENT_ID)):
        if not getattr(profile, key):
            return f"no {key}: ${variable} is not set"
    source = profile.client_assertion
    if source is None:
        return f"no federated token: ${ENV_FEDERATED_TOKEN_FILE} is not set"
    if source.kind == "file" and not os.path.isfile(source.ref):
        where = f" (${ENV_FEDERATED_TOKEN_FILE})" if source.key == ENV_FEDERATED_TOKEN_FILE else ""
        return f"the federated token file {source.ref}{where} does not exist"
    return None


# The registry entry (authlayer.registry reads it): everything the rest of authlayer needs to
# know about this flow.
from ..schema import COMMON, FlowSpec  # noqa: E402 - kept next to the entry it declares
from ._workload_env import prepare  # noqa: E402

FLOW = FlowSpec(
    name="workload_identity",
    acquire=acquire,
    keys=COMMON | {"tenant", "client_id", "client_assertion"},
    credential="optional",
    prepare=prepare,
    summary="a federated token the platform hands the workload (Kubernetes)",
    available=available,
)
