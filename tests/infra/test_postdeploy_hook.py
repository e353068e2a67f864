"""The azd postdeploy hook (infra/hooks/postdeploy.sh) deploys blob-events.bicep with azd's
outputs once the webhook key exists, and says what to do when the Azure CLI is missing.

A stub `az` on PATH records its arguments; nothing reaches Azure.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.infra

REPO = Path(__file__).resolve().parents[2]
HOOK = REPO / "infra" / "hooks" / "postdeploy.sh"
FAKE_KEY = "fake-blobs-extension-key"
AZD_ENV = {
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
    "AZURE_RESOURCE_GROUP": "rg-test",
    "AZURE_FUNCTION_APP_NAME": "func-exporter-abc",
    "AZURE_STORAGE_ACCOUNT_NAME": "stexpabc",
    "AZURE_BLOB_EVENTS_TOPIC_NAME": "evgt-exporter-abc",
    "AZURE_BLOB_EVENTS_DEAD_LETTER_CONTAINER": "eventgrid-deadletter",
}


def run_hook(bin_dir: Path) -> subprocess.CompletedProcess[str]:
    sh = shutil.which("sh")
    assert sh, "no sh"
    return subprocess.run(
        [sh, str(HOOK)],
        cwd=REPO,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", **AZD_ENV},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_hook_subscribes_the_blob_trigger_with_azds_outputs(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    az = tmp_path / "az"
    az.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{calls}"\n'
        f'case "$1 $2" in "functionapp keys") echo "{FAKE_KEY}";; esac\n',
        encoding="utf-8",
    )
    az.chmod(0o755)

    done = run_hook(tmp_path)

    assert done.returncode == 0, done.stdout + done.stderr
    keys, deploy = calls.read_text(encoding="utf-8").splitlines()
    assert keys.startswith("functionapp keys list")
    assert "--name func-exporter-abc" in keys
    assert deploy.startswith("deployment group create")
    assert "--resource-group rg-test" in deploy
    assert "--template-file infra/app/blob-events.bicep" in deploy
    for parameter in (
        "functionAppName=func-exporter-abc",
        "systemTopicName=evgt-exporter-abc",
        "storageAccountName=stexpabc",
        "deadLetterContainerName=eventgrid-deadletter",
    ):
        assert parameter in deploy
    assert FAKE_KEY not in done.stdout + done.stderr, "the hook printed the webhook key"


def test_without_the_azure_cli_the_hook_says_what_to_do(tmp_path: Path) -> None:
    if any((Path(d) / "az").exists() for d in ("/usr/bin", "/bin")):
        pytest.skip("an Azure CLI is installed system-wide")
    done = run_hook(tmp_path)
    assert done.returncode == 1
    assert "Azure CLI (az)" in done.stderr
    assert "azd hooks run postdeploy" in done.stderr
