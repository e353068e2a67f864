"""`make check-infra` (infra/check.py) fails, naming what is wrong, when a template is made
insecure, does not parse, or skips a checkov check without saying why; and passes as it is.

Each test runs the checker as `make check-infra` does, with `.venv-infra`'s Python, on a copy
of infra/ that it edits. checkov takes seconds per run, so there are three runs in all (module
fixtures), each asserted on by one or more tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
INFRA_PYTHON = REPO / ".venv-infra" / "bin" / "python"

pytestmark = [
    pytest.mark.infra,
    pytest.mark.skipif(
        not INFRA_PYTHON.exists() and not os.environ.get("CI"),
        reason="no .venv-infra yet: `make check-infra` creates it (in CI these tests always run)",
    ),
]


@dataclass(frozen=True)
class Checked:
    returncode: int
    output: str


def copy_infra(destination: Path) -> Path:
    copy = destination / "infra"
    shutil.copytree(INFRA, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def edit(template: Path, old: str, new: str) -> None:
    """Replace the one occurrence of `old` (a template that changed shape fails loudly here)."""
    text = template.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {template}"
    template.write_text(text.replace(old, new), encoding="utf-8")


def check(infra: Path) -> Checked:
    assert INFRA_PYTHON.exists(), "no .venv-infra: run `make check-infra` first"
    done = subprocess.run(
        [str(INFRA_PYTHON), str(INFRA / "check.py"), str(infra)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return Checked(done.returncode, done.stdout + done.stderr)


@pytest.fixture(scope="module")
def as_is(tmp_path_factory: pytest.TempPathFactory) -> Checked:
    return check(copy_infra(tmp_path_factory.mktemp("as-is")))


@pytest.fixture(scope="module")
def insecure(tmp_path_factory: pytest.TempPathFactory) -> Checked:
    """Shared keys back on, TLS 1.0, plain HTTP, no purge protection, Key Vault access
    policies, Application Insights keys: one flip per promise, each caught by one check."""
    infra = copy_infra(tmp_path_factory.mktemp("insecure"))
    app = infra / "app"
    edit(app / "storage.bicep", "allowSharedKeyAccess: false", "allowSharedKeyAccess: true")
    edit(app / "storage.bicep", "minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_0'")
    edit(app / "function.bicep", "httpsOnly: true", "httpsOnly: false")
    edit(app / "keyvault.bicep", "enablePurgeProtection: true", "enablePurgeProtection: false")
    edit(app / "keyvault.bicep", "enableRbacAuthorization: true", "enableRbacAuthorization: false")
    edit(app / "monitoring.bicep", "DisableLocalAuth: true", "DisableLocalAuth: false")
    return check(infra)


@pytest.fixture(scope="module")
def careless(tmp_path_factory: pytest.TempPathFactory) -> Checked:
    """A typo that breaks the syntax, two skips without a reason, one skip in the wrong place,
    and the app made Owner of the vault."""
    infra = copy_infra(tmp_path_factory.mktemp("careless"))
    app = infra / "app"
    edit(app / "identity.bicep", "  location: location\n", "  location location\n")
    function = (app / "function.bicep").read_text(encoding="utf-8")
    edit(
        app / "function.bicep",
        next(line for line in function.splitlines() if "checkov:skip=CKV_AZURE_213:" in line),
        "  //checkov:skip=CKV_AZURE_213",
    )
    edit(
        app / "function.bicep",
        next(line for line in function.splitlines() if "checkov:skip=CKV_AZURE_212:" in line),
        "  //checkov:skip=CKV_AZURE_212:   ",
    )
    edit(
        app / "keyvault.bicep",
        "    enableSoftDelete: true\n",
        "    //checkov:skip=CKV_AZURE_44:a storage check, skipped on the vault\n"
        "    enableSoftDelete: true\n",
    )
    edit(
        app / "keyvault.bicep",
        "secretsUser: '4633458b-17de-408a-b874-0445c86b69e6'",
        "secretsUser: '8e3af657-a8ff-443c-a75c-2fe8c4bcb635'",
    )
    return check(infra)


def test_the_templates_as_they_are_pass(as_is: Checked) -> None:
    assert as_is.returncode == 0, as_is.output
    assert "0 failed" in as_is.output
    assert "0 parsing errors" in as_is.output
    assert "infra check passed" in as_is.output


def test_an_insecure_template_fails_naming_each_check(insecure: Checked) -> None:
    assert insecure.returncode == 1, insecure.output
    failed = {line for line in insecure.output.splitlines() if line.endswith(" FAILED")}
    for check_id, what in [
        ("CKV_EXPORTER_1", "storage.bicep"),  # shared keys: our policy, checkov has none
        ("CKV_AZURE_44", "storage.bicep"),  # TLS 1.0
        ("CKV_AZURE_70", "function.bicep"),  # HTTP allowed
        ("CKV_AZURE_110", "keyvault.bicep"),  # no purge protection
        ("CKV_EXPORTER_3", "keyvault.bicep"),  # access policies instead of RBAC
        ("CKV_EXPORTER_4", "monitoring.bicep"),  # instrumentation-key telemetry
    ]:
        assert any(check_id in line and what in line for line in failed), (
            f"{check_id} did not fail on {what}:\n{insecure.output}"
        )


def test_a_syntax_error_fails_naming_the_file_and_line(careless: Checked) -> None:
    assert careless.returncode == 1, careless.output
    assert "identity.bicep:9:" in careless.output, careless.output
    assert "Bicep syntax error" in careless.output
    assert "checkov could not parse 1 file(s)" in careless.output


def test_a_skip_without_justification_fails(careless: Checked) -> None:
    assert careless.returncode == 1, careless.output
    assert "checkov:skip=CKV_AZURE_213 has no justification" in careless.output
    assert "checkov:skip=CKV_AZURE_212 has no justification" in careless.output


def test_a_skip_that_skips_nothing_fails(careless: Checked) -> None:
    assert "checkov:skip=CKV_AZURE_44 skips nothing here" in careless.output, careless.output


def test_granting_a_broad_role_fails(careless: Checked) -> None:
    assert "grants Owner (8e3af657-a8ff-443c-a75c-2fe8c4bcb635)" in careless.output, careless.output
