"""Benchmark: plan 100k and 1M generated profiles, next to a floor measured on the same machine.

The floor ("baseline") is the least any planner must do: read the CSV with the csv module and
serialise each row to JSON. Each measurement runs in a fresh interpreter, so its peak RSS is its
own, and the clock covers the work only (not imports).

    python bench/plan.py [--sizes 100000,1000000] [--seed 1] [--repeat 1] [--json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / ".data"  # git-ignored
WORKERS = ("baseline", "plan")

# Measure the working tree, not whatever copy of the package is installed.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def work_baseline(path: Path) -> dict[str, Any]:
    """The floor: csv.reader over the file, json.dumps of each row. Nothing else."""
    start = time.perf_counter()
    rows = total = 0
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader, None)  # header
        for rows, row in enumerate(reader, 1):  # noqa: B007  # rows is the count
            total += len(json.dumps(row))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": rows, "peak_rss_mb": peak_rss_mb(), "json_chars": total}


def work_plan(path: Path) -> dict[str, Any]:
    """exporter.core.planning.plan_file on the file (imported before the clock starts)."""
    from exporter.core.planning import plan_file

    start = time.perf_counter()
    stats = plan_file(path)
    seconds = time.perf_counter() - start
    counts = ("valid", "rejected", "duplicates", "blank", "batches")
    return {
        "seconds": seconds,
        "rows": int(stats.rows),
        "peak_rss_mb": peak_rss_mb(),
        **{name: int(getattr(stats, name)) for name in counts},
    }


@dataclass
class Measured:
    """Best of the repeats for one worker on one file, or why it failed."""

    seconds: float = 0.0
    rows: int = 0
    peak_rss_mb: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def measure(kind: str, path: Path, repeat: int) -> Measured:
    """Run the worker `repeat` times, each in a fresh interpreter; keep the best time and RSS."""
    runs: list[dict[str, Any]] = []
    for _ in range(repeat):
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--worker", kind, str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return Measured(error=f"exit {done.returncode}: {detail}")
        runs.append(json.loads(lines[-1]))
    best = min(runs, key=lambda r: float(r["seconds"]))
    counts = {k: int(v) for k, v in best.items() if k not in ("seconds", "rows", "peak_rss_mb")}
    return Measured(
        seconds=float(best["seconds"]),
        rows=int(best["rows"]),
        peak_rss_mb=min(float(r["peak_rss_mb"]) for r in runs),
        counts=counts,
    )


def sample(rows: int, seed: int) -> tuple[Path, dict[str, int] | None]:
    """The generated CSV for (rows, seed), made once and cached, and what the generator planted."""
    path = DATA / f"segment-{rows}-seed{seed}.csv"
    planted = path.with_name(path.name + ".summary.json")
    if not path.exists():
        from exporter.core.samples import generate

        DATA.mkdir(parents=True, exist_ok=True)
        where = path.relative_to(ROOT)
        print(f"generating {rows:,} rows (seed {seed}) into {where} ...", end="", flush=True)
        start = time.perf_counter()
        summary = generate(path, rows, seed)
        print(f" {time.perf_counter() - start:.1f} s")
        planted.write_text(json.dumps(asdict(summary)) + "\n", encoding="utf-8")
    if planted.exists():
        return path, {k: int(v) for k, v in json.loads(planted.read_text("utf-8")).items()}
    return path, None


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def parse_size(text: str) -> int:
    """'100000', '100_000', '100k' or '1M' -> int."""
    text = text.strip().replace("_", "").replace(",", "").lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    value = int(text[:-1] if scale > 1 else text) * scale
    if value <= 0:
        raise argparse.ArgumentTypeError(f"sizes must be positive: {text!r}")
    return value


def print_table(results: list[dict[str, Any]]) -> None:
    head = (
        f"{'rows':>11} | {'baseline s':>10} {'profiles/s':>11} {'peak MB':>8} |"
        f" {'plan s':>8} {'profiles/s':>11} {'peak MB':>8} | {'plan/baseline':>13}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        base: Measured = r["baseline"]
        plan: Measured = r["plan"]
        cells = [f"{r['rows']:>11,} |"]
        for m, width in ((base, 10), (plan, 8)):
            if m.error:
                cells.append(f"{'failed':>{width}} {'-':>11} {'-':>8} |")
            else:
                cells.append(
                    f"{m.seconds:>{width}.2f} {m.per_second:>11,.0f} {m.peak_rss_mb:>8.1f} |"
                )
        ok = not base.error and not plan.error and base.seconds
        cells.append(f"{plan.seconds / base.seconds:>12.2f}x" if ok else f"{'-':>13}")
        print(" ".join(cells))
    print()
    for r in results:
        base, plan = r["baseline"], r["plan"]
        print(f"{r['rows']:,} rows ({r['file']}):")
        if base.error:
            print(f"  baseline failed: {base.error}")
        if plan.error:
            print(f"  plan failed: {plan.error}")
        else:
            c = plan.counts
            print(
                f"  planned:   {plan.rows:,} rows, {c.get('valid', 0):,} valid, "
                f"{c.get('rejected', 0):,} rejected, {c.get('duplicates', 0):,} duplicates, "
                f"{c.get('blank', 0):,} blank, {c.get('batches', 0):,} batches"
            )
        if r["generated"]:
            g = r["generated"]
            print(
                f"  generated: {g['rows']:,} rows, {g['valid']:,} valid, {g['invalid']:,} invalid "
                f"emails, {g['duplicates']:,} duplicates, {g['blank']:,} blank"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--sizes",
        default="100000,1000000",
        help="comma-separated row counts; 100k and 1M work too (default 100000,1000000)",
    )
    parser.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    parser.add_argument("--repeat", type=int, default=1, help="best of K runs (default 1)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        kind, file = args.worker
        if kind not in WORKERS:
            parser.error(f"--worker KIND must be one of {', '.join(WORKERS)}")
        result = (work_baseline if kind == "baseline" else work_plan)(Path(file))
        print(json.dumps(result))
        return 0

    try:
        sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    except (ValueError, argparse.ArgumentTypeError) as e:
        parser.error(f"--sizes: {e}")
    if not sizes:
        parser.error("--sizes: give at least one size")
    if args.repeat < 1:
        parser.error("--repeat must be 1 or more")

    info = machine()
    print(
        f"python {info['python']} ({info['implementation']}), {info['cpus']} CPUs, "
        f"{info['platform']}; seed {args.seed}, best of {args.repeat}"
    )
    results: list[dict[str, Any]] = []
    for rows in sizes:
        path, generated = sample(rows, args.seed)
        results.append(
            {
                "rows": rows,
                "file": str(path.relative_to(ROOT)),
                "generated": generated,
                "baseline": measure("baseline", path, args.repeat),
                "plan": measure("plan", path, args.repeat),
            }
        )
    print()
    print_table(results)

    failed = any(r[k].error for r in results for k in WORKERS)
    if args.json:
        out = {
            "machine": info,
            "seed": args.seed,
            "repeat": args.repeat,
            "results": [
                {
                    **{k: v for k, v in r.items() if k not in WORKERS},
                    **{k: {**asdict(r[k]), "profiles_per_s": r[k].per_second} for k in WORKERS},
                    "ratio": (
                        r["plan"].seconds / r["baseline"].seconds
                        if not r["plan"].error and not r["baseline"].error
                        else None
                    ),
                }
                for r in results
            ],
        }
        print(json.dumps(out))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
