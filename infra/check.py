"""Check the infrastructure templates offline: every Bicep file parses and passes checkov.

    python infra/check.py [DIR]        # DIR: the templates' folder, this script's by default

Run with the `.venv-infra` interpreter (`make check-infra`), which has pycep-parser and checkov.
Exit 1, listing every problem, when:
- a `.bicep` file does not parse (pycep, the parser checkov itself uses);
- checkov fails a check, or could not parse a file (it exits 0 on those: we read its JSON);
- a `checkov:skip=CHECK_ID:justification` comment has no justification, or skips nothing where
  it stands (the check does not apply to that resource, or the comment is outside its braces);
- one of our own policies (DIR/policies) evaluated no resource (it did not load);
- a template grants a broad role (Owner, Contributor, ...) instead of a least-privilege one;
- an alert rule reads log lines the app no longer writes (an event or field renamed under
  exporter/), watches another workspace than the one the app logs to, tells no action group,
  lacks a required property, or an alert operators rely on (failed runs, poison messages,
  list drift) is gone: see infra/check_alerts.py;
- the web console's sign-in (App Service Authentication with Entra ID, authsettingsV2) is
  missing or weak, excludes a path it must not (the console, an anonymous route) or misses one
  the JSON API or the platform needs, or disagrees with the app settings, the app role the
  postprovision hook defines, or the hook itself; a hook script does not parse (bash -n, and
  shellcheck where installed): see infra/check_auth.py.
Exit 2 when checkov cannot be run or its output cannot be read.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from check_alerts import alert_problems
from check_alerts import summary as alerts_summary
from check_auth import auth_problems
from check_auth import summary as auth_summary
from pycep import BicepParser

CHECKOV_TIMEOUT_SECONDS = 600
SKIP_COMMENT = re.compile(r"checkov:skip=([^:\s]*)(?::(.*))?")
OUR_POLICY_ID = re.compile(r"\bCKV_EXPORTER_\d+\b")
BROAD_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "f58310d9-a9f6-439a-9e8d-f62e7b41a168": "Role Based Access Control Administrator",
    "17d1049b-9a84-46fb-8f53-869881c3d3ab": "Storage Account Contributor",
    "00482a5a-887f-4fb3-b363-3b7fe8e74483": "Key Vault Administrator",
}
"""Roles that can do far more than read or write data; granting one needs a design change here."""


@dataclass(frozen=True)
class Skip:
    """A `checkov:skip=` comment in a template."""

    file: Path
    line: int
    check_id: str
    justification: str


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print(__doc__, file=sys.stderr)
        return 2
    root = (Path(argv[0]) if argv else Path(__file__).parent).resolve()
    templates = sorted(root.rglob("*.bicep"))
    if not templates:
        print(f"error: no .bicep file under {root}", file=sys.stderr)
        return 2

    parsed, problems = parse_templates(templates)
    problems += broad_role_grants(templates)
    problems += alert_problems(parsed, root)
    problems += auth_problems(parsed, root)
    skips = [skip for template in templates for skip in skip_comments(template)]
    problems += [unjustified(skip) for skip in skips if not skip.justification]

    try:
        report = run_checkov(root)
    except CheckovError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    problems += checkov_problems(report, root, skips)

    print(summary(report, len(templates)), flush=True)
    if alerts := alerts_summary(parsed):
        print(alerts, flush=True)
    print(auth_summary(parsed), flush=True)
    if problems:
        print(f"\ninfra check FAILED ({len(problems)} problem(s)):", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print("infra check passed")
    return 0


# --- the templates themselves ------------------------------------------------------------------


def parse_templates(templates: list[Path]) -> tuple[dict[Path, dict[str, Any]], list[str]]:
    """Every template must parse: checkov skips (and only counts) the files it cannot read.
    Returns the parsed templates (pycep's trees, for the alert checks) and the problems."""
    parser = BicepParser()
    parsed: dict[Path, dict[str, Any]] = {}
    problems = []
    for template in templates:
        try:
            parsed[template] = parser.parse(file_path=template)
        except Exception as exc:  # lark's errors, whatever their type, say where and why
            where = ""
            if getattr(exc, "line", None) is not None:
                where = f":{exc.line}:{getattr(exc, 'column', '?')}"  # type: ignore[attr-defined]
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            problems.append(f"{_shown(template)}{where}: Bicep syntax error (pycep): {reason}")
    return parsed, problems


def skip_comments(template: Path) -> list[Skip]:
    skips = []
    for number, text in enumerate(template.read_text(encoding="utf-8").splitlines(), start=1):
        found = SKIP_COMMENT.search(text)
        if found:
            justification = (found.group(2) or "").strip()
            skips.append(Skip(template, number, found.group(1), justification))
    return skips


def unjustified(skip: Skip) -> str:
    return (
        f"{_shown(skip.file)}:{skip.line}: checkov:skip={skip.check_id or '?'} has no "
        f"justification; write it as //checkov:skip={skip.check_id or 'CKV_AZURE_NN'}:<why "
        f"this is acceptable here>"
    )


def broad_role_grants(templates: list[Path]) -> list[str]:
    problems = []
    for template in templates:
        for number, text in enumerate(template.read_text(encoding="utf-8").splitlines(), start=1):
            for role_id, role in BROAD_ROLES.items():
                if role_id in text.lower():
                    problems.append(
                        f"{_shown(template)}:{number}: grants {role} ({role_id}); grant the "
                        f"data role the principal needs instead"
                    )
    return problems


# --- checkov -----------------------------------------------------------------------------------


class CheckovError(Exception):
    """checkov did not run, or said something we cannot read."""


def run_checkov(root: Path) -> dict[str, Any]:
    """checkov's JSON report for the Bicep templates under `root`, with our policies."""
    checkov = Path(sys.executable).with_name("checkov")
    command = [
        str(checkov) if checkov.exists() else "checkov",
        "--directory",
        str(root),
        "--framework",
        "bicep",
        "--skip-download",  # offline: no policies or mappings from the platform
        "--output",
        "json",
    ]
    policies = root / "policies"
    if policies.is_dir():
        command += ["--external-checks-dir", str(policies)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=CHECKOV_TIMEOUT_SECONDS, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CheckovError(f"could not run checkov ({command[0]}): {exc}") from exc
    if done.returncode not in (0, 1):  # 1: failed checks, which the report lists
        raise CheckovError(f"checkov exited {done.returncode}: {_tail(done.stderr)}")
    try:
        output: Any = json.loads(done.stdout)
    except ValueError as exc:
        raise CheckovError(f"checkov's output is not JSON ({exc}): {_tail(done.stdout)}") from exc
    reports = output if isinstance(output, list) else [output]
    for report in reports:
        if isinstance(report, dict) and report.get("check_type") == "bicep":
            return report
    raise CheckovError(f"checkov reported no Bicep results: {_tail(done.stdout)}")


def checkov_problems(report: dict[str, Any], root: Path, skips: list[Skip]) -> list[str]:
    results = report.get("results", {})
    problems = []
    parsing_errors = report.get("summary", {}).get("parsing_errors", 0)
    if parsing_errors:
        files = ", ".join(str(f) for f in results.get("parsing_errors", [])) or "see checkov -d"
        problems.append(f"checkov could not parse {parsing_errors} file(s): {files}")
    for failed in results.get("failed_checks", []):
        problems.append(f"{_where(failed, root)}: {_check(failed)} FAILED")
    skipped = results.get("skipped_checks", [])
    for result in skipped:
        comment = result.get("check_result", {}).get("suppress_comment", "").strip()
        already_reported = any(_skipped_by(result, s) and not s.justification for s in skips)
        if (not comment or comment == "No comment provided") and not already_reported:
            problems.append(
                f"{_where(result, root)}: {_check(result)} skipped without justification"
            )
    for skip in skips:
        if skip.check_id and not any(_skipped_by(result, skip) for result in skipped):
            problems.append(
                f"{_shown(skip.file)}:{skip.line}: checkov:skip={skip.check_id} skips nothing "
                f"here (the check does not apply to this resource, or the comment is outside "
                f"its braces)"
            )
    problems += unused_policies(report, root)
    return problems


def unused_policies(report: dict[str, Any], root: Path) -> list[str]:
    """Our policies must have run: checkov logs a policy file it cannot load, and goes on."""
    expected: set[str] = set()
    for policy in (root / "policies").glob("*.py"):
        expected |= set(OUR_POLICY_ID.findall(policy.read_text(encoding="utf-8")))
    results = report.get("results", {})
    seen = {
        result.get("check_id")
        for kind in ("passed_checks", "failed_checks", "skipped_checks")
        for result in results.get(kind, [])
    }
    return [
        f"our policy {policy_id} evaluated no resource: it did not load (see checkov's log with "
        f"LOG_LEVEL=DEBUG) or its resource type is gone"
        for policy_id in sorted(expected - seen)
    ]


def _skipped_by(result: dict[str, Any], skip: Skip) -> bool:
    first, last = result.get("file_line_range", [0, 0])
    return (
        result.get("check_id") == skip.check_id
        and Path(result.get("file_abs_path", "")).resolve() == skip.file.resolve()
        and first <= skip.line <= last
    )


def _where(result: dict[str, Any], root: Path) -> str:
    path = Path(result.get("file_abs_path") or root / result.get("file_path", "?").lstrip("/"))
    first, _ = result.get("file_line_range", [0, 0])
    return f"{_shown(path)}:{first} ({result.get('resource', '?')})"


def _check(result: dict[str, Any]) -> str:
    return f'{result.get("check_id")} "{result.get("check_name", "")}"'


def summary(report: dict[str, Any], files: int) -> str:
    counts = report.get("summary", {})
    results = report.get("results", {})
    lines = [
        f"checkov {counts.get('checkov_version', '?')} on {files} Bicep file(s): "
        f"{counts.get('passed', 0)} passed, {counts.get('failed', 0)} failed, "
        f"{counts.get('skipped', 0)} skipped, {counts.get('parsing_errors', 0)} parsing errors"
    ]
    for result in results.get("skipped_checks", []):
        comment = result.get("check_result", {}).get("suppress_comment", "")
        lines.append(f"  skipped {result.get('check_id')} on {result.get('resource')}: {comment}")
    return "\n".join(lines)


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is below it (shorter, clickable)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:]) or "(no output)"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
