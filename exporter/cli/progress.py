"""Following runs in the terminal: their progress on stderr, their summaries, the exit code
that says how they ended."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable

from exporter.admin.operations import follow_runs
from exporter.admin.views import Progress, bar, summary
from exporter.cli.exit_codes import EXIT_TIMEOUT
from exporter.flow.services import Services
from exporter.model.runs import RunRecord


def fit(line: str, width: int) -> str:
    """A line cut to the terminal's width: a redrawn line that wrapped would leave its tail
    behind (the cursor goes back one row per line drawn, not per row the terminal used)."""
    return line if len(line) < width else line[: max(width - 4, 1)] + "..."


def printer() -> Callable[[dict[str, Progress]], None]:
    """Progress on stderr: one line per run, redrawn in place on a terminal (a live bar, cut to
    its width), one whole line per change otherwise (logs, pipes)."""
    tty = sys.stderr.isatty()
    last: dict[str, str] = {}
    drawn = 0

    def show(states: dict[str, Progress]) -> None:
        nonlocal drawn
        lines = {run_id: f"{run_id} {bar(state)}" for run_id, state in sorted(states.items())}
        if lines == last:
            return
        if tty:
            width = shutil.get_terminal_size().columns
            up = f"\x1b[{drawn}F" if drawn else ""
            shown = "".join(f"\x1b[2K{fit(line, width)}\n" for line in lines.values())
            sys.stderr.write(up + shown)
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
