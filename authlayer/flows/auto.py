"""Flow ``auto``: the built-in chain of the Azure tools' ``DefaultAzureCredential`` (CONTRACT
§8): environment variables, workload identity, managed identity, the Azure CLI, azd, Azure
PowerShell, narrowed by ``$AZURE_TOKEN_CREDENTIALS``.

Like flow ``chain``, it never asks for a token itself: the provider binds the first source that
is available here (:mod:`authlayer.chains` builds the sources' profiles from this one and the
environment). The profile's ``authority``/``cloud`` (else ``$AZURE_AUTHORITY_HOST``, read when
the profile is loaded, else the public cloud) applies to every source that talks to Entra.
"""

from __future__ import annotations

from ._workload_env import authority_from_env
from .chain import acquire

__all__ = ["SOURCES", "acquire"]

# The sources, in the order they are tried (DefaultAzureCredential's, without the ones that
# need a person at a browser or an editor).
SOURCES = ("environment", "workload_identity", "managed_identity", "azure_cli", "azd",
           "azure_powershell")


# The registry entry (authlayer.registry reads it): everything the rest of authlayer needs to
# know about this flow.
from ..schema import COMMON, FlowSpec  # noqa: E402 - kept next to the entry it declares

FLOW = FlowSpec(
    name="auto",
    acquire=acquire,
    # tenant: for the developer tools (the environment's sources name their own);
    # azure_config_dir: for the Azure CLI.
    keys=COMMON | {"tenant", "azure_config_dir"},
    prepare=authority_from_env,
    summary="the Azure tools' default chain: environment, workload and managed identity, "
            "Azure CLI, azd, Azure PowerShell",
    stands_for="auto",
)
