"""Benchmark: hostile snapshot files through `exporter check`, each in its own process.

Generates, gzipped, in a temporary folder (or `--dir`), files built to cost memory or time:

- `commas-100mib`:  a header, one line of 100 MiB of commas, one good row;
- `line-1gib`:      one line of 1 GiB of `a`, no line break anywhere;
- `line-1gib-row`:  a header, one good row, a 1 GiB line of `a`, another good row;
- `blank-100m`:     a header and 100 million blank rows (newlines);
- `header-1m`:      a header of 1,000,000 columns, one row;
- `fields-1m`:      a header, one row of 1,000,000 fields (1 MiB of commas), good rows;
- `field-2m`:       100,000 good rows with one 2,000,000-character field in the middle;
- `quote-open`:     a quote opened on line 3 and never closed, 100,000 rows after it;
- `wide-rows-1gib`: 1,024 rows of 349,000 quoted empty fields each (1 GiB; every line just
                    under the line cap, quoted so csv must split it: the costliest bytes);
- `rows-60m`:       60,000,000 one-character rows (each rejected), past the row cap.

For each, runs `python -m exporter check FILE --json` and prints its wall time, its peak RSS
(the child's own `ru_maxrss`, from `os.wait4`), its exit code and its outcome (the counts, or
the `error: ...` line). Prints figures only; nothing here asserts a timing.

    python bench/hostile.py [--dir DIR] [--only NAME,...] [--timeout SECONDS] [--json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
HEADER = b"email,first_name,city\n"
GOOD = b"ok%d@example.com,Olga,Oslo\n"


def good_rows(n: int, start: int = 0) -> Iterator[bytes]:
    block = 10_000
    for first in range(start, start + n, block):
        yield b"".join(GOOD % i for i in range(first, min(first + block, start + n)))


def repeated(byte: bytes, total: int) -> Iterator[bytes]:
    """`total` bytes of `byte`, in 1 MiB pieces."""
    piece = byte * MIB
    for _ in range(total // MIB):
        yield piece
    if total % MIB:
        yield byte * (total % MIB)


def commas_100mib() -> Iterator[bytes]:
    yield HEADER
    yield from repeated(b",", 100 * MIB)
    yield b"\n" + GOOD % 0


def line_1gib() -> Iterator[bytes]:
    yield from repeated(b"a", 1024 * MIB)


def line_1gib_row() -> Iterator[bytes]:
    yield HEADER + GOOD % 0
    yield from repeated(b"a", 1024 * MIB)
    yield b"\n" + GOOD % 1


def blank_100m() -> Iterator[bytes]:
    yield HEADER
    yield from repeated(b"\n", 100_000_000)


def header_1m() -> Iterator[bytes]:
    yield b"email"
    block = 10_000
    for first in range(1, 1_000_000, block):
        yield b"".join(b",c%d" % i for i in range(first, min(first + block, 1_000_000)))
    yield b"\n" + b"ok@example.com" + b"," * 999_999 + b"\n"


def fields_1m() -> Iterator[bytes]:
    yield HEADER + GOOD % 0
    yield b"x@example.com" + b"," * 999_999 + b"\n"
    yield from good_rows(1_000, 1)


def field_2m() -> Iterator[bytes]:
    yield HEADER
    yield from good_rows(50_000)
    yield b"big@example.com,Bea," + b"x" * 2_000_000 + b"\n"
    yield from good_rows(50_000, 50_000)


def quote_open() -> Iterator[bytes]:
    yield HEADER + GOOD % 0 + b'a@example.com,"Ann,Oslo\n'
    yield from good_rows(100_000, 1)


def wide_rows_1gib() -> Iterator[bytes]:
    yield HEADER
    line = b'"",' * 349_000 + b"\n"
    for _ in range(1024):
        yield line


def rows_60m() -> Iterator[bytes]:
    yield HEADER
    for _ in range(60):
        yield b"x\n" * 1_000_000


CASES: dict[str, tuple[Callable[[], Iterator[bytes]], str]] = {
    "commas-100mib": (commas_100mib, "one 100 MiB line of commas after the header"),
    "line-1gib": (line_1gib, "one 1 GiB line of 'a', no line break"),
    "line-1gib-row": (line_1gib_row, "a 1 GiB line of 'a' between good rows"),
    "blank-100m": (blank_100m, "100,000,000 blank rows"),
    "header-1m": (header_1m, "a header of 1,000,000 columns"),
    "fields-1m": (fields_1m, "a row of 1,000,000 fields among good rows"),
    "field-2m": (field_2m, "a 2,000,000-character field among 100,000 rows"),
    "quote-open": (quote_open, "a quote never closed, 100,000 rows after it"),
    "wide-rows-1gib": (wide_rows_1gib, "1,024 rows of 349,000 quoted fields (1 GiB)"),
    "rows-60m": (rows_60m, "60,000,000 one-character rows"),
}


def generate(folder: Path, name: str) -> Path:
    """The case's file, gzipped (made once per folder)."""
    path = folder / f"{name}.csv.gz"
    if not path.exists():
        make, _ = CASES[name]
        part = path.with_name(path.name + ".part")
        with gzip.open(part, "wb", compresslevel=6) as out:
            for piece in make():
                out.write(piece)
        part.rename(path)
    return path


def check(path: Path, timeout: float) -> dict[str, Any]:
    """`python -m exporter check PATH --json` in a child process: time, peak RSS, outcome."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-m", "exporter", "check", str(path), "--json"],
            cwd=ROOT,
            stdout=out,
            stderr=err,
        )
        timed_out = False
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - start > timeout:
                os.kill(child.pid, signal.SIGKILL)  # the child we started, by its id
                timed_out = True
                pid, status, usage = os.wait4(child.pid, 0)
                break
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    return {
        "seconds": seconds,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux reports KiB
        "exit": child.returncode,
        "outcome": f"killed after {timeout:.0f} s" if timed_out else outcome(stdout, stderr),
    }


def outcome(stdout: str, stderr: str) -> str:
    lines = stdout.strip().splitlines()
    if lines:
        try:
            summary = json.loads(lines[-1])
        except ValueError:
            return lines[-1][:200]
        reasons = ", ".join(f"{k} {v:,}" for k, v in summary["reasons"].items())
        text = (
            f"rows {summary['rows']:,}, valid {summary['valid']:,}, blank {summary['blank']:,}, "
            f"rejected {summary['rejected']:,}"
        )
        return text + (f" ({reasons})" if reasons else "")
    errors = [line for line in stderr.strip().splitlines() if line.strip()]
    if not errors:
        return "no output"
    last = errors[-1]
    return last if len(last) <= 300 else last[:297] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dir", type=Path, help="where the files go (kept); default: a temp dir")
    parser.add_argument("--only", help=f"comma-separated cases, of: {', '.join(CASES)}")
    parser.add_argument("--timeout", type=float, default=300.0, help="per check (default 300 s)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)}")

    with tempfile.TemporaryDirectory(prefix="hostile-") as scratch:
        folder = args.dir or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, files in {folder}")
        results = []
        for name in names:
            path = generate(folder, name)
            result = {"case": name, "gz_bytes": path.stat().st_size, **check(path, args.timeout)}
            results.append(result)
            print(
                f"{name:<14} {result['gz_bytes'] / 1024:>8,.0f} KiB gz  "
                f"{result['seconds']:>7.2f} s  {result['peak_rss_mb']:>7.1f} MB  "
                f"exit {result['exit']}  {result['outcome']}",
                flush=True,
            )
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
