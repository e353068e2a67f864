"""The alert rules of the templates, checked against the code whose log lines they read.

Used by infra/check.py (`make check-infra`) on the templates pycep parsed. The alerts read the
app's structured lines (`<event> key=value ...`, exporter/flow/events.py) from the workspace's
AppTraces table by their text, so nothing in Azure would say that a rule stopped matching
after an event or a field was renamed: the rule would just never fire. Hence, for every
`Microsoft.Insights/scheduledQueryRules` resource:
- its query names the lines it reads (`Message startswith "<event> "`), and each is an event
  the deployed code logs (an `event("<name>", ...)` call or a logger format string under
  exporter/, exporter/local/ excepted), or one of the Functions host's own lines (HOST_LINES);
- each field it extracts (`extract(@"\\b<field>=...")`) is logged by one of those lines, each
  phrase it looks for (`Message contains "..."`) and each value it compares (`== "..."`) is
  text the code writes;
- it is enabled, a LogAlert with a severity of 0-4, resolves itself (autoMitigate), is split
  by destination, and the rows its query returns (its last `summarize` or `project`) keep
  TimeGenerated, the dimensions and the measure (none when it counts rows);
- its evaluation frequency is no longer than its window, a `let window = ...;` equals the
  window, and a query time range longer than the window (overrideQueryTimeRange, at most 2
  days) counts only `ago(window)`: the rest is for looking things up, not for counting again;
- its scope is the Log Analytics workspace that monitoring.bicep creates (directly, or as an
  `existing` reference whose name main.bicep passes from that module's output);
- it tells an action group of the same template (enabled, a short name of at most 12
  characters, email and SMS receivers), and the identity it queries as (if any) holds a role
  on that workspace.
And the rules together cover what operators must hear about (REQUIRED_ALERTS), and every
poison queue a template declares (and the blob trigger's) is named by a rule's query.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

ACTION_GROUP = "Microsoft.Insights/actionGroups"
RULE = "Microsoft.Insights/scheduledQueryRules"
WORKSPACE = "Microsoft.OperationalInsights/workspaces"
ROLE_ASSIGNMENT = "Microsoft.Authorization/roleAssignments"

HOST_LINES = {
    "Message has reached MaxDequeueCount": (
        "Message has reached MaxDequeueCount of 5. Moving message to queue "
        "'webjobs-blobtrigger-poison'."
    ),
}
"""Lines the Functions host writes (not the app), as it writes them: the queue processor's
warning when it moves a message to a poison queue (Azure.WebJobs.Extensions.Storage.Queues);
the blob trigger's poison queue has no handler in the app, so only this line tells of it."""

BLOB_POISON_QUEUE = "webjobs-blobtrigger-poison"
"""Where the host moves a blob that failed every attempt: in no template (the host creates it),
and with no handler in the app."""

REQUIRED_ALERTS = {
    "failed runs": {"run finished", "run ended"},
    "poison messages": {
        "run ended",
        "batch failed",
        "list not verified",
        "entity not exported",
        "queue message dropped:",
    },
    "list drift": {"list looked at", "run finished"},
}
"""What operators must be told of, and the lines a rule must read to tell them."""

TIME_AGGREGATIONS = {"Average", "Count", "Maximum", "Minimum", "Total"}
OPERATORS = {"Equals", "GreaterThan", "GreaterThanOrEqual", "LessThan", "LessThanOrEqual"}
MAX_QUERY_TIME_RANGE = timedelta(days=2)
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical", "log"}
LOGGERS = {"log", "logger", "logging"}

NAMED_LINE = re.compile(r'\bMessage\s+startswith(?:_cs)?\s+"([^"]*)"')
PHRASE = re.compile(r'\bMessage\s+(?:contains|has)(?:_cs)?\s+"([^"]*)"')
EXTRACTED_FIELD = re.compile(r'\bextract\(\s*@?"\\b(\w+)=')
COMPARED_VALUE = re.compile(r'\b(\w+)\s*==\s*"([^"]*)"')
LET_WINDOW = re.compile(r"\blet\s+window\s*=\s*(\d+)([dhms])\s*;")
FIELD_IN_FORMAT = re.compile(r"(\w+)=%")
FIELD_START = re.compile(r"\s\w+=")


# --- what the app logs -------------------------------------------------------------------------


@dataclass
class AppLines:
    """What the deployed code writes: its lines (name -> fields) and every string it holds."""

    lines: dict[str, set[str]] = field(default_factory=dict)
    strings: list[str] = field(default_factory=list)

    def holds(self, text: str) -> bool:
        return any(text in s for s in self.strings) or any(text in h for h in HOST_LINES.values())


def app_lines(app: Path) -> AppLines:
    """The events (`event("name", field=...)`) and logger format strings of the code under
    `app`, less exporter/local/ (local tooling, never deployed)."""
    found = AppLines()
    for source in sorted(app.rglob("*.py")):
        if "local" in source.relative_to(app).parts[:1]:
            continue
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
        docstrings = {id(doc) for doc in _docstrings(tree)}  # what the code says, not writes
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if id(node) not in docstrings:
                    found.strings.append(node.value)
            elif isinstance(node, ast.Call) and node.args:
                _line_of_call(node, found)
    return found


def _docstrings(tree: ast.Module) -> Iterator[ast.Constant]:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                yield value


def _line_of_call(call: ast.Call, found: AppLines) -> None:
    first = call.args[0]
    if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
        return
    name = call.func.id if isinstance(call.func, ast.Name) else ""
    method, logger = "", ""
    if isinstance(call.func, ast.Attribute):
        method = call.func.attr
        logger = call.func.value.id if isinstance(call.func.value, ast.Name) else ""
    if "event" in (name, method):
        fields = {k.arg for k in call.keywords if k.arg}
        found.lines.setdefault(first.value, set()).update(fields)
    elif method in LOG_METHODS and logger.lower().strip("_") in LOGGERS:
        text = first.value
        cut = min([i for i in (text.find("%"), _field_start(text)) if i >= 0], default=len(text))
        if text[:cut].strip():
            found.lines.setdefault(text[:cut].strip(), set()).update(FIELD_IN_FORMAT.findall(text))


def _field_start(text: str) -> int:
    match = FIELD_START.search(text)
    return match.start() if match else -1


def find_app(root: Path) -> Path | None:
    """The app's code next to the templates (`<root>/../exporter`), else next to this script."""
    here = Path(__file__).resolve().parent
    for candidate in (root.parent / "exporter", here.parent / "exporter"):
        if candidate.is_dir():
            return candidate
    return None


# --- the templates -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    path: Path
    tree: dict[str, Any]

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {
            symbol: resource
            for symbol, resource in (self.tree.get("resources") or {}).items()
            if str(resource.get("type", "")).lower() == kind.lower()
        }

    def shown(self) -> str:
        try:
            return str(self.path.resolve().relative_to(Path.cwd()))
        except ValueError:
            return str(self.path)


def declared_strings(template: Template) -> Iterator[str]:
    """The strings of the template's list variables (`var queueNames = ['a', 'b']`)."""
    for variable in (template.tree.get("variables") or {}).values():
        value = variable.get("value") if isinstance(variable, dict) else None
        if isinstance(value, list):
            yield from (item for item in value if isinstance(item, str))


def accessor(node: Any) -> list[str] | None:
    """`a.b.c` as ["a", "b", "c"]; None for anything else."""
    if isinstance(node, str):
        return [node]
    if not isinstance(node, dict) or "operator" not in node:
        return None
    operator = node["operator"]
    if operator.get("type") != "property_accessor":
        return None
    head = accessor(operator["operands"]["operand_1"])
    tail = accessor(operator["operands"]["operand_2"])
    return head + tail if head is not None and tail is not None else None


def duration(text: Any) -> timedelta | None:
    """An ISO 8601 duration of days, hours, minutes (PT5M, PT1H, P2D); None if not one."""
    if not isinstance(text, str):
        return None
    match = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?", text)
    if not match or not any(match.groups()):
        return None
    days, hours, minutes = (int(g or 0) for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes)


def _kql_timespan(amount: str, unit: str) -> timedelta:
    units = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
    return timedelta(**{units[unit]: int(amount)})


# --- the checks --------------------------------------------------------------------------------


def alert_problems(templates: dict[Path, dict[str, Any]], root: Path) -> list[str]:
    """Every problem of the alert rules and action groups of these parsed templates."""
    parsed = [Template(path, tree) for path, tree in templates.items()]
    rules = [(t, symbol, r) for t in parsed for symbol, r in t.resources(RULE).items()]
    problems: list[str] = []
    if not rules:
        return [
            "no alert rule (Microsoft.Insights/scheduledQueryRules) in the templates: failed "
            "runs, poison messages and list drift must alert (infra/app/alerts.bicep)"
        ]
    app = find_app(root)
    if app is None:
        return [f"cannot find the app's code (exporter/) next to {root} to check the alerts"]
    lines = app_lines(app)
    poison_queues = {BLOB_POISON_QUEUE} | {
        queue
        for template in parsed
        for queue in declared_strings(template)
        if queue.endswith("-poison")
    }
    lines.strings += sorted(poison_queues)  # the host writes their names in its line
    for template in parsed:
        for symbol, group in template.resources(ACTION_GROUP).items():
            problems += action_group_problems(template, symbol, group)
    named: dict[str, set[str]] = {}
    watched: dict[tuple[Path, str], Template] = {}
    for template, symbol, rule in rules:
        where = f"{template.shown()} ({symbol})"
        problems += [f"{where}: {p}" for p in rule_problems(template, rule, lines)]
        problems += [f"{where}: {p}" for p in workspace_problems(template, rule)]
        if (workspace := scoped_workspace(template, rule)) is not None:
            watched[template.path, workspace] = template
        named[where] = set()
        for condition in _conditions(rule):
            named[where] |= {n.strip() for n in NAMED_LINE.findall(str(condition.get("query")))}
    for (_, workspace), template in watched.items():
        problems += wiring_problems(template, workspace, parsed)
    queries = [str(c.get("query")) for _, _, rule in rules for c in _conditions(rule)]
    for queue in sorted(poison_queues):
        if not any(queue in query for query in queries):
            problems.append(
                f"no alert rule watches the poison queue {queue}: name it in the poison "
                "messages rule (by the line its handler writes, or the host's line)"
            )
    for what, needed in REQUIRED_ALERTS.items():
        if not any(needed <= names for names in named.values()):
            problems.append(
                f"no alert rule tells of {what}: none reads all of {sorted(needed)} (add it "
                "back, or change REQUIRED_ALERTS in infra/check_alerts.py with the design)"
            )
    return problems


def action_group_problems(template: Template, symbol: str, group: dict[str, Any]) -> list[str]:
    where = f"{template.shown()} ({symbol})"
    config = group.get("config") or {}
    properties = config.get("properties") or {}
    problems = []
    if str(config.get("location", "")).lower() != "global":
        problems.append(f"{where}: an action group's location must be 'Global'")
    if properties.get("enabled") is not True:
        problems.append(f"{where}: the action group must be enabled (enabled: true)")
    short = properties.get("groupShortName")
    params = template.tree.get("parameters") or {}
    if isinstance(short, str) and short in params:
        limits = [d.get("argument") for d in params[short].get("decorators", [])]
        kinds = [d.get("type") for d in params[short].get("decorators", [])]
        ok = "max_length" in kinds and int(limits[kinds.index("max_length")]) <= 12
        if not ok:
            problems.append(f"{where}: parameter {short} needs @maxLength(12) (groupShortName)")
    elif not isinstance(short, str) or not 1 <= len(short) <= 12:
        problems.append(f"{where}: groupShortName must be 1 to 12 characters")
    for receivers in ("emailReceivers", "smsReceivers"):
        if receivers not in properties:
            problems.append(
                f"{where}: no {receivers}: the README tells operators to add an email or a "
                "phone through the parameters"
            )
    return problems


def _conditions(rule: dict[str, Any]) -> list[dict[str, Any]]:
    criteria = ((rule.get("config") or {}).get("properties") or {}).get("criteria") or {}
    all_of = criteria.get("allOf")
    return [c for c in all_of if isinstance(c, dict)] if isinstance(all_of, list) else []


def rule_problems(template: Template, rule: dict[str, Any], lines: AppLines) -> list[str]:
    config = rule.get("config") or {}
    properties = config.get("properties") or {}
    problems = []
    if config.get("kind") != "LogAlert":
        problems.append("kind must be 'LogAlert'")
    if properties.get("enabled") is not True:
        problems.append("the rule must be enabled (enabled: true)")
    severity = properties.get("severity")
    if not isinstance(severity, int) or isinstance(severity, bool) or not 0 <= severity <= 4:
        problems.append(f"severity must be an integer 0-4, not {severity!r}")
    if properties.get("autoMitigate") is not True:
        problems.append("autoMitigate must be true: an alert resolves when its cause is gone")
    problems += _timing_problems(properties)
    problems += _action_problems(template, properties)
    conditions = _conditions(rule)
    if not conditions:
        problems.append("no criteria.allOf condition")
    for number, condition in enumerate(conditions, start=1):
        where = f"condition {number}: " if len(conditions) > 1 else ""
        problems += [where + p for p in condition_problems(condition, properties, lines)]
    return problems


def _timing_problems(properties: dict[str, Any]) -> list[str]:
    problems = []
    frequency = duration(properties.get("evaluationFrequency"))
    window = duration(properties.get("windowSize"))
    if frequency is None:
        problems.append("evaluationFrequency must be an ISO 8601 duration (PT5M)")
    if window is None:
        problems.append("windowSize must be an ISO 8601 duration (PT15M)")
    if frequency and window and frequency > window:
        problems.append(
            f"evaluationFrequency {properties['evaluationFrequency']} is longer than windowSize "
            f"{properties['windowSize']}: lines between two windows would never be seen"
        )
    override = properties.get("overrideQueryTimeRange")
    if override is not None:
        span = duration(override)
        if span is None or not window or not window < span <= MAX_QUERY_TIME_RANGE:
            problems.append(
                f"overrideQueryTimeRange {override!r} must be longer than windowSize and at "
                "most P2D"
            )
    return problems


def _action_problems(template: Template, properties: dict[str, Any]) -> list[str]:
    groups = template.resources(ACTION_GROUP)
    told = (properties.get("actions") or {}).get("actionGroups")
    told = told if isinstance(told, list) else []
    if not any((path := accessor(t)) and path[1:] == ["id"] and path[0] in groups for t in told):
        return [
            "it tells no action group: actions.actionGroups must hold <actionGroup>.id of "
            f"an action group in {template.shown()}"
        ]
    return []


def condition_problems(
    condition: dict[str, Any], properties: dict[str, Any], lines: AppLines
) -> list[str]:
    query = condition.get("query")
    if not isinstance(query, str) or not query.strip():
        return ["no query"]
    problems = []
    if condition.get("timeAggregation") not in TIME_AGGREGATIONS:
        problems.append(f"timeAggregation must be one of {sorted(TIME_AGGREGATIONS)}")
    if condition.get("operator") not in OPERATORS:
        problems.append(f"operator must be one of {sorted(OPERATORS)}")
    if not isinstance(condition.get("threshold"), int | float):
        problems.append("threshold must be a number")
    periods = condition.get("failingPeriods") or {}
    wanted, of = periods.get("minFailingPeriodsToAlert"), periods.get("numberOfEvaluationPeriods")
    if not (isinstance(wanted, int) and isinstance(of, int) and 1 <= wanted <= of):
        problems.append(
            "failingPeriods: needs 1 <= minFailingPeriodsToAlert <= numberOfEvaluationPeriods"
        )
    problems += _column_problems(condition, query)
    problems += _window_problems(query, properties)
    problems += query_problems(query, lines)
    return problems


def _column_problems(condition: dict[str, Any], query: str) -> list[str]:
    """The rows the query returns carry what the rule aggregates and splits by: the last
    `| summarize ... by ...` or `| project ...` of the query names them."""
    problems = []
    last = _last_shape(query)
    columns = last.split(" by ", 1)[1] if last.startswith("summarize") and " by " in last else last
    measure = condition.get("metricMeasureColumn")
    if condition.get("timeAggregation") == "Count":
        if measure is not None:
            problems.append("timeAggregation Count counts rows: no metricMeasureColumn")
    elif measure is None:
        problems.append(
            f"timeAggregation {condition.get('timeAggregation')} needs a metricMeasureColumn"
        )
    elif not re.search(rf"\b{re.escape(str(measure))}\b", last):
        problems.append(
            f"metricMeasureColumn {measure!r} is not a column of the query's last {_op(last)}"
        )
    if not re.search(r"\bTimeGenerated\b", last):
        problems.append(
            f"the query's last {_op(last)} drops TimeGenerated: the rule bins its rows by it"
        )
    dimensions = condition.get("dimensions")
    names = [d.get("name") for d in dimensions if isinstance(d, dict)] if dimensions else []
    if "destination" not in names:
        problems.append("no dimension 'destination': one alert per destination")
    for name in names:
        if not re.search(rf"\b{re.escape(str(name))}\b", columns):
            problems.append(f"dimension {name!r} is not a column of the query's last {_op(last)}")
    return problems


def _last_shape(query: str) -> str:
    """The query's last `summarize` or `project` (what shapes the rows it returns), to its end."""
    found = list(re.finditer(r"\|\s*(summarize|project)\b", query))
    return query[found[-1].start(1) :] if found else ""


def _op(last: str) -> str:
    return last.split(None, 1)[0] if last else "summarize or project (there is none)"


def _window_problems(query: str, properties: dict[str, Any]) -> list[str]:
    window = duration(properties.get("windowSize"))
    let = LET_WINDOW.search(query)
    problems = []
    if let and window and _kql_timespan(*let.groups()) != window:
        problems.append(
            f"the query's `let window = {''.join(let.groups())};` is not windowSize "
            f"{properties.get('windowSize')}"
        )
    if properties.get("overrideQueryTimeRange") is not None and not (
        let and re.search(r"\bTimeGenerated\s*>=?\s*ago\(window\)", query)
    ):
        problems.append(
            "with overrideQueryTimeRange the query must count only `TimeGenerated > "
            "ago(window)` (with `let window = <windowSize>;`), or it counts lines again in "
            "every evaluation"
        )
    return problems


def query_problems(query: str, lines: AppLines) -> list[str]:
    """The lines, fields, phrases and values the query matches, against what the app writes."""
    problems = []
    named = list(dict.fromkeys(n.strip() for n in NAMED_LINE.findall(query)))
    if not named:
        problems.append('the query names no line: filter with `Message startswith "<event> "`')
    fields: set[str] = set()
    for name in named:
        if name in lines.lines:
            fields |= lines.lines[name]
        elif not any(name.startswith(host) for host in HOST_LINES):
            problems.append(
                f'the query reads lines "{name} ..." but the app logs no such event '
                "(renamed or removed under exporter/?)"
            )
    for extracted in sorted(set(EXTRACTED_FIELD.findall(query))):
        if extracted not in fields:
            problems.append(
                f"the query extracts {extracted}= but none of the lines it reads "
                f"({', '.join(sorted(set(named)))}) logs that field"
            )
    for phrase in PHRASE.findall(query):
        if not lines.holds(phrase.strip().strip("'")):
            problems.append(f'the query looks for "{phrase}", which the app never writes')
    for column, value in COMPARED_VALUE.findall(query):
        if not lines.holds(value):
            problems.append(
                f'the query compares {column} with "{value}", which the app never writes'
            )
    return problems


def workspace_problems(template: Template, rule: dict[str, Any]) -> list[str]:
    """The rule's scope is a workspace of its template, and its identity may query it."""
    symbol = scoped_workspace(template, rule)
    if symbol is None:
        return [
            "scopes must be exactly [<workspace>.id], a Log Analytics workspace declared in "
            f"{template.shown()}"
        ]
    return _identity_problems(template, rule, symbol)


def scoped_workspace(template: Template, rule: dict[str, Any]) -> str | None:
    """The symbol of the workspace the rule is scoped to (`scopes: [<symbol>.id]`), if that."""
    scopes = ((rule.get("config") or {}).get("properties") or {}).get("scopes")
    paths = [accessor(s) for s in scopes] if isinstance(scopes, list) else []
    if len(paths) != 1 or not paths[0] or paths[0][1:] != ["id"]:
        return None
    return paths[0][0] if paths[0][0] in template.resources(WORKSPACE) else None


def wiring_problems(template: Template, symbol: str, parsed: list[Template]) -> list[str]:
    """An `existing` workspace the rules watch is the one monitoring creates: every module that
    deploys this template names it from that module's output (and one does deploy it)."""
    workspace = template.resources(WORKSPACE)[symbol]
    if not workspace.get("existing"):
        return []
    where = f"{template.shown()} ({symbol})"
    name = (workspace.get("config") or {}).get("name")
    if not isinstance(name, str) or name not in (template.tree.get("parameters") or {}):
        return [f"{where}: the existing workspace must be named by a parameter"]
    users = list(_modules_of(template, parsed))
    if not users:
        return [
            f"no module deploys {template.shown()}: its alert rules would never exist "
            "(main.bicep must use it)"
        ]
    problems = []
    for parent, module_symbol, module in users:
        passed = ((module.get("config") or {}).get("params") or {}).get(name)
        if not _is_created_workspace_name(parent, passed, parsed):
            problems.append(
                f"{parent.shown()} ({module_symbol}) must pass {name} from the output of the "
                "module that creates the Log Analytics workspace (monitoring.outputs."
                "logAnalyticsName), so the rules watch the workspace the app logs to"
            )
    return problems


def _identity_problems(template: Template, rule: dict[str, Any], workspace: str) -> list[str]:
    identity = (rule.get("config") or {}).get("identity")
    if not identity:
        return []
    if not isinstance(identity, dict):
        return ["identity must be an object naming one user-assigned identity"]
    keys = identity.get("userAssignedIdentities") or {}
    symbols = {m for key in keys for m in re.findall(r"\$\{(\w+)\.id\}", str(key))}
    if identity.get("type") != "UserAssigned" or len(symbols) != 1:
        return ["identity must be one user-assigned identity of this template (`${x.id}`)"]
    [who] = symbols
    for grant in template.resources(ROLE_ASSIGNMENT).values():
        config = grant.get("config") or {}
        principal = accessor((config.get("properties") or {}).get("principalId"))
        if config.get("scope") == workspace and principal == [who, "properties", "principalId"]:
            return []
    return [
        f"its identity {who} holds no role on workspace {workspace}: the rule could not run "
        "its query (grant Log Analytics Reader there)"
    ]


def _modules_of(
    template: Template, parsed: list[Template]
) -> Iterator[tuple[Template, str, dict[str, Any]]]:
    for parent in parsed:
        for symbol, module in (parent.tree.get("modules") or {}).items():
            relative = (module.get("detail") or {}).get("path")
            if relative and (parent.path.parent / relative).resolve() == template.path.resolve():
                yield parent, symbol, module


def _is_created_workspace_name(parent: Template, passed: Any, parsed: list[Template]) -> bool:
    """`passed` is `<module>.outputs.<output>` of a module of `parent` whose template creates a
    Log Analytics workspace and returns its name there."""
    path = accessor(passed)
    if not path or len(path) != 3 or path[1] != "outputs":
        return False
    module = ((parent.tree.get("modules") or {}).get(path[0]) or {}).get("detail") or {}
    target = (parent.path.parent / str(module.get("path", ""))).resolve()
    for template in parsed:
        if template.path.resolve() != target:
            continue
        created = {s for s, w in template.resources(WORKSPACE).items() if not w.get("existing")}
        output = ((template.tree.get("outputs") or {}).get(path[2]) or {}).get("value")
        returned = accessor(output)
        return bool(returned and returned[1:] == ["name"] and returned[0] in created)
    return False


def summary(templates: dict[Path, dict[str, Any]]) -> str:
    """One line per alert rule: its name, severity, timing and the lines it reads."""
    out = []
    for path, tree in templates.items():
        template = Template(path, tree)
        for symbol, rule in template.resources(RULE).items():
            properties = (rule.get("config") or {}).get("properties") or {}
            queries = [str(c.get("query")) for c in _conditions(rule)]
            named = sorted({n.strip() for q in queries for n in NAMED_LINE.findall(q)})
            out.append(
                f"  alert {symbol}: severity {properties.get('severity')}, every "
                f"{properties.get('evaluationFrequency')} over {properties.get('windowSize')}, "
                f"reads: {'; '.join(named)}"
            )
    return "\n".join(out)
