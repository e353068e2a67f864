"""The alerts of infra/app/alerts.bicep read log lines the app writes, and `make check-infra`
(infra/check.py, with infra/check_alerts.py) fails, naming the rule and what is wrong, when a
rule is broken or when the code stops writing a line, field or phrase a rule reads.

The first tests read the queries straight from the template and check them against the code
with infra/check_alerts.py (standard library only: no .venv-infra needed). The others run the
checker as `make check-infra` does, on copies of infra/ (and of exporter/), as they are and
broken: three checkov runs in all.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.infra.test_check_infra import INFRA_PYTHON, Checked, check, copy_infra, edit

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "infra" / "app" / "alerts.bicep"

pytestmark = pytest.mark.infra

needs_infra_venv = pytest.mark.skipif(
    not INFRA_PYTHON.exists() and not os.environ.get("CI"),
    reason="no .venv-infra yet: `make check-infra` creates it (in CI these tests always run)",
)


@pytest.fixture(scope="module")
def check_alerts() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "check_alerts", REPO / "infra" / "check_alerts.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while defined
    spec.loader.exec_module(module)
    return module


def queries() -> dict[str, str]:
    """Each rule's query, by resource symbol, as the template holds it ('''...''')."""
    text = ALERTS.read_text(encoding="utf-8")
    found = {}
    for rule in re.finditer(
        r"^resource (\w+) 'Microsoft\.Insights/scheduledQueryRules@", text, re.M
    ):
        body = text[rule.end() :]
        query = re.search(r"query: '''\n(.*?)'''", body, re.DOTALL)
        assert query, f"no query in {rule.group(1)}"
        found[rule.group(1)] = query.group(1)
    return found


def app_lines(check_alerts: ModuleType) -> Any:
    """What the app writes, plus the queue names storage.bicep declares (the host's line for a
    poison queue names it), as infra/check.py sees them."""
    lines = check_alerts.app_lines(REPO / "exporter")
    storage = (REPO / "infra" / "app" / "storage.bicep").read_text(encoding="utf-8")
    declared = re.search(r"^var queueNames = \[(.*?)^\]", storage, re.MULTILINE | re.DOTALL)
    assert declared
    lines.strings += re.findall(r"'([^']+)'", declared.group(1))
    lines.strings.append(check_alerts.BLOB_POISON_QUEUE)
    return lines


def edit_in(template: Path, resource: str, old: str, new: str) -> None:
    """Replace the first `old` after `resource <resource> ` (one rule among several alike)."""
    text = template.read_text(encoding="utf-8")
    start = text.index(f"resource {resource} ")
    at = text.index(old, start)
    template.write_text(text[:at] + new + text[at + len(old) :], encoding="utf-8")


# --- the queries against the code, without checkov ---------------------------------------------


def test_the_template_has_the_three_alerts() -> None:
    assert set(queries()) == {"failedRuns", "poisonMessages", "listDrift"}


@pytest.mark.parametrize("rule", ["failedRuns", "poisonMessages", "listDrift"])
def test_each_query_reads_lines_fields_and_phrases_the_app_writes(
    check_alerts: ModuleType, rule: str
) -> None:
    assert check_alerts.query_problems(queries()[rule], app_lines(check_alerts)) == []


def test_the_events_the_alerts_rely_on_are_logged_with_their_fields(
    check_alerts: ModuleType,
) -> None:
    lines = check_alerts.app_lines(REPO / "exporter").lines
    assert {"run_id", "destination", "state"} <= lines["run finished"]
    assert {"run_id", "destination", "state"} <= lines["run ended"]
    assert {"run_id", "look", "missing", "changed", "extra"} <= lines["list looked at"]
    assert {"queue", "reason"} <= lines["queue message dropped:"]


def test_a_renamed_event_field_or_phrase_is_named(check_alerts: ModuleType) -> None:
    lines = check_alerts.app_lines(REPO / "exporter")
    query = "\n".join(
        [
            'AppTraces | where Message startswith "run concluded "',
            '| where Message contains "sending failed each time"',
            '| extend outcome = extract(@"\\boutcome=(\\S+)", 1, Message)',
            '| where outcome == "flopped"',
        ]
    )
    problems = "\n".join(check_alerts.query_problems(query, lines))
    assert 'reads lines "run concluded ..." but the app logs no such event' in problems
    assert 'looks for "sending failed each time", which the app never writes' in problems
    assert "extracts outcome= but none of the lines it reads" in problems
    assert 'compares outcome with "flopped", which the app never writes' in problems


def test_local_tooling_and_docstrings_do_not_count_as_what_the_app_writes(
    check_alerts: ModuleType, tmp_path: Path
) -> None:
    app = tmp_path / "exporter"
    (app / "local").mkdir(parents=True)
    (app / "local" / "host.py").write_text('event("host started", port=1)\n')
    (app / "flow.py").write_text(
        '"""Says: run exploded."""\nlog.warning("disk full: %s", x)\nevent("run ok", run_id=1)\n'
    )
    lines = check_alerts.app_lines(app)
    assert lines.lines == {"disk full:": set(), "run ok": {"run_id"}}
    assert not lines.holds("run exploded")


def test_a_condition_counts_rows_or_aggregates_a_measure(check_alerts: ModuleType) -> None:
    condition = {
        "query": "AppTraces | project TimeGenerated, destination, n",
        "timeAggregation": "Count",
        "metricMeasureColumn": "n",
        "operator": "GreaterThan",
        "threshold": 0,
        "failingPeriods": {"numberOfEvaluationPeriods": 1, "minFailingPeriodsToAlert": 2},
        "dimensions": [{"name": "destination", "operator": "Include", "values": ["*"]}],
    }
    problems = check_alerts.condition_problems(
        condition, {"windowSize": "PT15M"}, app_lines(check_alerts)
    )
    assert "timeAggregation Count counts rows: no metricMeasureColumn" in problems
    assert any(
        p.startswith("failingPeriods: needs 1 <= minFailingPeriodsToAlert") for p in problems
    )
    condition |= {"timeAggregation": "Total", "metricMeasureColumn": "count_"}
    problems = check_alerts.condition_problems(
        condition, {"windowSize": "PT15M"}, app_lines(check_alerts)
    )
    assert "metricMeasureColumn 'count_' is not a column of the query's last project" in problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [("PT5M", timedelta(minutes=5)), ("PT1H", timedelta(hours=1)), ("P2D", timedelta(days=2))],
)
def test_durations(check_alerts: ModuleType, text: str, expected: timedelta) -> None:
    assert check_alerts.duration(text) == expected
    assert check_alerts.duration("5 minutes") is None


# --- make check-infra on broken copies ---------------------------------------------------------


@pytest.fixture(scope="module")
def broken_rules(tmp_path_factory: pytest.TempPathFactory) -> Checked:
    """One flaw per property the checker promises, each in a place of its own."""
    infra = copy_infra(tmp_path_factory.mktemp("broken-rules"))
    alerts = infra / "app" / "alerts.bicep"
    edit_in(alerts, "failedRuns", "        actionGroup.id\n", "")
    edit_in(alerts, "failedRuns", "severity: 1", "severity: 7")
    edit_in(alerts, "failedRuns", "autoMitigate: true", "autoMitigate: false")
    edit_in(alerts, "failedRuns", "let window = 15m;", "let window = 30m;")
    edit_in(
        alerts,
        "failedRuns",
        "summarize TimeGenerated = max(TimeGenerated) by destination, run_id",
        "summarize by destination, run_id",
    )
    edit_in(alerts, "poisonMessages", "      workspace.id\n", "      alertsIdentity.id\n")
    edit_in(alerts, "listDrift", "windowSize: 'PT1H'", "windowSize: 'PT10M'")
    edit_in(alerts, "listDrift", "name: 'destination'", "name: 'segment'")
    edit(alerts, "    enabled: true\n    emailReceivers", "    enabled: false\n    emailReceivers")
    edit(
        alerts,
        "principalId: alertsIdentity.properties.principalId",
        "principalId: alertsIdentity.properties.clientId",
    )
    text = alerts.read_text(encoding="utf-8")  # the drift rule reads another event
    alerts.write_text(text.replace('"list looked at "', '"list compared "'), encoding="utf-8")
    edit(
        infra / "app" / "storage.bicep",
        "  'list-checks'\n",
        "  'list-checks'\n  'reports-poison'\n",
    )
    edit(
        infra / "main.bicep",
        "logAnalyticsName: monitoring.outputs.logAnalyticsName",
        "logAnalyticsName: 'log-somewhere-else'",
    )
    return check(infra)


@pytest.fixture(scope="module")
def renamed_in_code(tmp_path_factory: pytest.TempPathFactory) -> Checked:
    """The templates as they are, next to a copy of the code where an event, a field and a
    phrase the alerts read were renamed."""
    root = tmp_path_factory.mktemp("renamed")
    infra = copy_infra(root)
    app = root / "exporter"
    shutil.copytree(REPO / "exporter", app, ignore=shutil.ignore_patterns("__pycache__"))
    edit(app / "flow" / "run_requests.py", 'event("run requested"', 'event("run asked for"')
    edit(app / "flow" / "heal.py", "look=look,", "round=look,")
    edit(app / "flow" / "poison.py", '"sending failed on every attempt"', '"sending failed always"')
    return check(infra)


@needs_infra_venv
def test_the_alerts_as_they_are_pass_and_are_listed(tmp_path: Path) -> None:
    done = check(copy_infra(tmp_path))
    assert done.returncode == 0, done.output
    for rule in ("failedRuns", "poisonMessages", "listDrift"):
        assert f"alert {rule}: severity" in done.output, done.output


@needs_infra_venv
def test_a_broken_rule_fails_naming_the_rule_and_the_flaw(broken_rules: Checked) -> None:
    assert broken_rules.returncode == 1, broken_rules.output
    out = broken_rules.output
    for expected in [
        "(failedRuns): it tells no action group",
        "(failedRuns): severity must be an integer 0-4, not 7",
        "(failedRuns): autoMitigate must be true",
        "(failedRuns): the query's `let window = 30m;` is not windowSize PT15M",
        "(failedRuns): the query's last summarize drops TimeGenerated",
        "(poisonMessages): scopes must be exactly [<workspace>.id]",
        "(listDrift): evaluationFrequency PT15M is longer than windowSize PT10M",
        "(listDrift): no dimension 'destination'",
        "(listDrift): dimension 'segment' is not a column of the query's last project",
        "(actionGroup): the action group must be enabled",
        "its identity alertsIdentity holds no role on workspace workspace",
        "main.bicep (alerts) must pass logAnalyticsName from the output of the module",
        '(listDrift): the query reads lines "list compared ..." but the app logs no such event',
        "no alert rule tells of list drift",
        "no alert rule watches the poison queue reports-poison",
    ]:
        assert expected in out, f"{expected!r} not in:\n{out}"


@needs_infra_venv
def test_an_event_field_or_phrase_renamed_in_the_code_fails(renamed_in_code: Checked) -> None:
    assert renamed_in_code.returncode == 1, renamed_in_code.output
    out = renamed_in_code.output
    for expected in [
        '(failedRuns): the query reads lines "run requested ..." but the app logs no such event',
        '(poisonMessages): the query reads lines "run requested ..."',
        '(poisonMessages): the query looks for "sending failed on every attempt"',
        "(listDrift): the query extracts look= but none of the lines it reads",
    ]:
        assert expected in out, f"{expected!r} not in:\n{out}"
