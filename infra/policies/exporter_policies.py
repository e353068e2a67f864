"""Our own checkov policies: promises this deployment makes that checkov's Bicep checks miss.

Loaded by infra/check.py (`--external-checks-dir`). Each pins one property to the one value the
design relies on; an absent property fails too, since the platform default is not the promise.
"""

from __future__ import annotations

from typing import Any

from checkov.bicep.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult


class RequiredValue(BaseResourceCheck):
    """`path` (slash-separated, under the resource body) must be exactly `expected`."""

    def __init__(self, id: str, name: str, resource_type: str, path: str, expected: bool) -> None:
        self.key_path = path
        self.required = expected
        super().__init__(
            name=name,
            id=id,
            categories=(CheckCategories.IAM,),
            supported_resources=(resource_type,),
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        self.evaluated_keys = [self.key_path]
        value: Any = conf
        for key in self.key_path.split("/"):
            value = value.get(key) if isinstance(value, dict) else None
        return CheckResult.PASSED if value is self.required else CheckResult.FAILED


RequiredValue(
    "CKV_EXPORTER_1",
    "Ensure the storage account accepts Entra ID only (shared key access disabled)",
    "Microsoft.Storage/storageAccounts",
    "properties/allowSharedKeyAccess",
    False,
)
RequiredValue(
    "CKV_EXPORTER_2",
    "Ensure the storage account allows no anonymous (public) blob access",
    "Microsoft.Storage/storageAccounts",
    "properties/allowBlobPublicAccess",
    False,
)
RequiredValue(
    "CKV_EXPORTER_3",
    "Ensure Key Vault authorizes with Azure RBAC (no access policies)",
    "Microsoft.KeyVault/vaults",
    "properties/enableRbacAuthorization",
    True,
)
RequiredValue(
    "CKV_EXPORTER_4",
    "Ensure Application Insights accepts Entra ID only (local auth disabled)",
    "Microsoft.Insights/components",
    "properties/DisableLocalAuth",
    True,
)
RequiredValue(
    "CKV_EXPORTER_5",
    "Ensure the Log Analytics workspace accepts Entra ID only (local auth disabled)",
    "Microsoft.OperationalInsights/workspaces",
    "properties/features/disableLocalAuth",
    True,
)
RequiredValue(
    "CKV_EXPORTER_6",
    "Ensure the function app allows no basic-auth (FTP, publishing profile) deployment",
    "Microsoft.Web/sites/basicPublishingCredentialsPolicies",
    "properties/allow",
    False,
)
