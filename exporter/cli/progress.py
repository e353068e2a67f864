"""Following runs in the terminal: their progress on stderr, their summaries, the exit code
that says how they ended."""

from __future__ import annotations

import sys
from collections.abc import Callable

from exporter.admin.operations import follow_runs
from exporter.admin.views import Progress, bar, summary
from exporter.cli.exit_codes import EXIT_TIMEOUT
from exporter.flow.services import Services
from exporter.model.runs import RunRecord


def printer() -> Callable[[dict[str, Progress]], None]:
    """Progress on stderr: one line per run, redrawn in place on a terminal (a live bar), one
    line per change otherwise (logs, pipes)."""
    tty = sys.stderr.isatty()
    last: dict[str, str] = {}
    drawn = 0

    def show(states: dict[str, Progress]) -> None:
        nonlocal drawn
        lines = {run_id: f"{run_id} {bar(state)}" for run_id, state in sorted(states.items())}
        if lines == last:
            return
        if tty:
            up = f"\x1b[{drawn}F" if drawn else ""
            sys.stderr.write(up + "".join(f"\x1b[2K{line}\n" for line in lines.values()))
            drawn = len(lines)
        else:
            for run_id, line in lines.items():
                if last.get(run_id) != line:
                    print(line, file=sys.stderr)
        sys.stderr.flush()
        last.clear()
        last.update(lines)

    return show


def wait_for(svc: Services, run_ids: list[str], timeout: float) -> int:
    """Follow runs to their end, print their summaries; the exit code says how they ended."""
    try:
        done = follow_runs(svc, run_ids, timeout=timeout, on_progress=printer())
    except TimeoutError as exc:
        print(f"error: timed out waiting for the runs: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    return summaries(svc, done)


def summaries(svc: Services, done: list[RunRecord]) -> int:
    for run in done:
        print(summary(run, svc.ledger.batches(run.run_id)))
    return 0 if all(r.state == "succeeded" for r in done) else 1
