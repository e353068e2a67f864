"""The sandbox's startup settings: `SandboxConfig`, from flags and `SANDBOX_<FLAG>` variables
(flags win). By default the sandbox keeps its state in memory and accepts any non-empty key;
`--state-file` keeps it in a file between runs (`persist`), `--api-key` and `--keys-from` say
which keys it accepts (`keys`)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from exporter.local.sandbox.faults import Faults

_NO_FAULTS: Final = Faults()


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Startup settings; `faults` are the values `/__sandbox/reset` returns to."""

    host: str = "127.0.0.1"
    port: int = 3030
    api_key: str | None = None
    """A bearer key accepted (besides those of `keys_from`); with neither, any non-empty key."""
    seed: int | None = None
    faults: Faults = _NO_FAULTS
    keys_from: Path | None = None
    """A local.settings.json: accept exactly the API keys it holds, followed while running."""
    state_file: Path | None = None
    """Where the state is kept between runs; None: in memory only."""
    save_interval: float = 2.0
    """Seconds from a change to its save in `state_file` (at least)."""


def _env(name: str, default: str | None) -> str | None:
    return os.environ.get(f"SANDBOX_{name}", default)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m exporter.local.sandbox",
        description="A stateful SendGrid Marketing Campaigns API for local runs and tests. "
        "Every flag can also be set as SANDBOX_<FLAG> (for example SANDBOX_PORT).",
    )
    d = Faults()

    def flag(name: str, kind: Callable[[str], Any], default: Any, text: str) -> None:
        env = name.upper().replace("-", "_")
        fallback = None if default is None else str(default)
        parser.add_argument(f"--{name}", type=kind, default=_env(env, fallback), help=text)

    flag("host", str, "127.0.0.1", "address to listen on (default %(default)s)")
    flag("port", int, 3030, "port to listen on; 0 picks a free one (default %(default)s)")
    flag("api-key", str, None, "a bearer key to accept (default: any non-empty key)")
    flag(
        "keys-from",
        Path,
        None,
        "a local.settings.json: accept exactly the API keys written in its SENDGRID_KEY_* "
        "settings, followed while running (default: any non-empty key)",
    )
    flag(
        "state-file",
        Path,
        None,
        "keep the state (lists, contacts, fields, jobs) in this file between runs: loaded at "
        "start, saved after changes and at stop (default: in memory only)",
    )
    flag("save-interval", float, 2.0, "seconds from a change to its save in --state-file")
    flag("job-delay", float, d.job_delay, "seconds an upsert job stays pending")
    flag("rate-limit", int, d.rate_limit, "requests per window and API key")
    flag("rate-window", float, d.rate_window, "rate-limit window in seconds")
    flag("error-rate", float, d.error_rate, "fraction of /v3 requests answered 500")
    flag("throttle-rate", float, d.throttle_rate, "fraction of /v3 requests answered 429")
    flag("latency-ms", float, d.latency_ms, "milliseconds added to every /v3 request")
    flag("drop-rate", float, d.drop_rate, "fraction of /v3 requests whose connection is dropped")
    flag("contact-error-rate", float, d.contact_error_rate, "fraction of upserted contacts errored")
    flag("job-fail-rate", float, d.job_fail_rate, "fraction of import jobs that end failed")
    flag("export-delay", float, d.export_delay, "seconds a contact export stays pending")
    flag("export-fail-rate", float, d.export_fail_rate, "fraction of exports that end failure")
    flag("list-lag", float, d.list_lag, "seconds before list membership changes are visible")
    flag("lose-rate", float, d.lose_rate, "fraction of /v3 requests handled but never answered")
    flag("seed", int, None, "seed for the fault dice, for reproducible runs")
    flag("log-level", str, "INFO", "DEBUG, INFO, WARNING or ERROR (default %(default)s)")
    return parser


def config_from_args(argv: Sequence[str] | None = None) -> tuple[SandboxConfig, str]:
    """(config, log level) from flags and SANDBOX_* variables; flags win."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        faults = Faults(
            error_rate=args.error_rate,
            throttle_rate=args.throttle_rate,
            latency_ms=args.latency_ms,
            drop_rate=args.drop_rate,
            contact_error_rate=args.contact_error_rate,
            job_fail_rate=args.job_fail_rate,
            job_delay=args.job_delay,
            rate_limit=args.rate_limit,
            rate_window=args.rate_window,
            export_delay=args.export_delay,
            export_fail_rate=args.export_fail_rate,
            list_lag=args.list_lag,
            lose_rate=args.lose_rate,
        )
    except ValueError as exc:
        parser.error(str(exc))
    if not args.save_interval > 0:
        parser.error("--save-interval must be a positive number of seconds")
    config = SandboxConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key or None,
        seed=args.seed,
        faults=faults,
        keys_from=args.keys_from,
        state_file=args.state_file,
        save_interval=args.save_interval,
    )
    return config, str(args.log_level).upper()
