"""Realistic, reproducible customer segments for tests, the demo and benchmarks.

Real segments cannot leave the tenant, so this writes look-alikes of Customer Insights exports:
names in many scripts, optional fields left blank, and a known number of invalid, duplicate and
blank rows, so a test can check an importer's counts exactly. It streams: 1M rows take seconds and
little memory. What the rows are made of (names, places, malformed emails) is in
`exporter.core.sample_pools`.

    python -m exporter.core.samples --rows 50000 --seed 7 --out .demo/segment.csv
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import os
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from exporter.core.sample_pools import (
    ALTERATIONS,
    DOMAINS,
    INVALID_FORMS,
    name_pool,
    place_pool,
    tier_pool,
)

__all__ = ["HEADER", "SampleSummary", "generate", "main"]

HEADER: Final = (
    "CustomerId",
    "FirstName",
    "LastName",
    "PrimaryEmail",
    "City",
    "StateProvince",
    "CountryRegion",
    "PostalCode",
    "LoyaltyTier",
)
_BLANK_ROW: Final = ("",) * len(HEADER)


@dataclass(frozen=True, slots=True)
class SampleSummary:
    """What was written, counted as a correct importer would count it."""

    rows: int  # data rows written (header excluded), blank rows included
    valid: int  # distinct valid emails (what a correct importer keeps)
    invalid: int  # rows whose email is syntactically invalid
    duplicates: int  # rows repeating an earlier valid email (differing in case and/or spaces)
    blank: int  # rows with every field empty


_RECENT: Final = 1000  # duplicates repeat one of the last 1,000 valid emails
_CHUNK: Final = 4096  # rows per writerows() call


def _format(out: Path) -> tuple[str, bool]:
    """('csv' or 'jsonl', gzipped?) from the file name, or ValueError."""
    name = out.name.lower()
    gz = name.endswith(".gz")
    base = name[:-3] if gz else name
    for kind in ("csv", "jsonl"):
        if base.endswith(f".{kind}") and len(base) > len(kind) + 1:
            return kind, gz
    raise ValueError(
        f"cannot tell the format of {str(out)!r}: the name must end in "
        ".csv, .jsonl, .csv.gz or .jsonl.gz"
    )


@contextmanager
def _open_text(path: Path, gz: bool) -> Iterator[IO[str]]:
    """UTF-8 text, no newline translation; gzip with mtime 0 and no file name (stable bytes)."""
    with open(path, "wb") as raw:
        if gz:
            with (
                gzip.GzipFile("", "wb", compresslevel=6, fileobj=raw, mtime=0) as binary,
                io.TextIOWrapper(binary, encoding="utf-8", newline="") as text,
            ):
                yield text
        else:
            with io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
                yield text


def generate(
    out: str | Path,
    rows: int,
    seed: int = 0,
    *,
    invalid_rate: float = 0.01,
    duplicate_rate: float = 0.01,
    blank_rate: float = 0.0,
) -> SampleSummary:
    """Write `rows` sample rows to `out` (.csv/.jsonl, optionally .gz) and return exact counts.

    Same arguments, same bytes. The file appears complete or not at all (written aside, renamed).
    """
    path = Path(out)
    kind, gz = _format(path)
    if rows < 0:
        raise ValueError(f"rows must be 0 or more, not {rows}")
    rates = {
        "invalid_rate": invalid_rate,
        "duplicate_rate": duplicate_rate,
        "blank_rate": blank_rate,
    }
    for label, rate in rates.items():
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{label} must be between 0 and 1, not {rate}")
    if sum(rates.values()) > 1.0:
        raise ValueError("invalid_rate + duplicate_rate + blank_rate must not exceed 1")

    rng = random.Random(seed)
    names, places, tiers = name_pool(rng), place_pool(rng), tier_pool(rng)
    id_key = rng.getrandbits(48)
    blank_cut = blank_rate
    invalid_cut = blank_cut + invalid_rate
    duplicate_cut = invalid_cut + duplicate_rate
    rnd, bits_of = rng.random, rng.getrandbits

    recent: list[str] = [""] * _RECENT  # ring of the last valid emails, for duplicates
    n_recent = 0
    valid = invalid = duplicates = blank = 0

    def row_batches() -> Iterator[list[tuple[str, ...]]]:
        nonlocal n_recent, valid, invalid, duplicates, blank
        batch: list[tuple[str, ...]] = []
        append = batch.append
        for n in range(1, rows + 1):
            if n % _CHUNK == 0:
                yield batch
                batch.clear()
            u = rnd()
            if u < blank_cut:
                append(_BLANK_ROW)
                blank += 1
                continue
            # 128 random bits: name 14, place 12, domain 3, tier 6, email style 2, id 78.
            r = bits_of(128)
            first, last, first_ascii, last_ascii = names[r & 0x3FFF]
            city, state, country, postal = places[r >> 14 & 0xFFF]
            domain = DOMAINS[r >> 26 & 0x7]
            tier = tiers[r >> 29 & 0x3F]
            style = r >> 35 & 0x3
            # CustomerId looks like a UUID 4: 74 random bits, a version and a variant, and 48 bits
            # that are a bijection of n, so ids never collide.
            node = (n ^ id_key) * 0x9E3779B97F4B & 0xFFFF_FFFF_FFFF
            node ^= node >> 23
            node = node * 0xD6E8FEB86659 & 0xFFFF_FFFF_FFFF
            node ^= node >> 25
            h = f"{r >> 37 & 0xFFFF_FFFF_FFFF_0FFF | 0x4000:016x}"
            customer_id = f"{h[:8]}-{h[8:12]}-{h[12:]}-{0x8000 | r >> 101 & 0x3FFF:04x}-{node:012x}"

            if u < invalid_cut:
                form = INVALID_FORMS[rng.randrange(len(INVALID_FORMS))]
                email = form(first_ascii, last_ascii, n, domain)
                invalid += 1
            elif u < duplicate_cut and n_recent:
                earlier = recent[rng.randrange(min(n_recent, _RECENT))]
                case, (before, after) = ALTERATIONS[rng.randrange(len(ALTERATIONS))]
                email = f"{before}{case(earlier)}{after}"
                duplicates += 1
            else:
                # Unique: the row number ends the local part, and romanisations have no digits.
                if style == 0:
                    email = f"{first_ascii}.{last_ascii}.{n}@{domain}"
                elif style == 1:
                    email = f"{first_ascii}{last_ascii}{n}@{domain}"
                elif style == 2:
                    email = f"{first_ascii}_{last_ascii}{n}@{domain}"
                else:
                    email = f"{first_ascii[0]}{last_ascii}.{n}@{domain}"
                recent[n_recent % _RECENT] = email
                n_recent += 1
                valid += 1
            append((customer_id, first, last, email, city, state, country, postal, tier))
        if batch:
            yield batch

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with _open_text(tmp, gz) as text:
            if kind == "csv":
                writer = csv.writer(text, lineterminator="\n")
                writer.writerow(HEADER)
                for batch in row_batches():
                    writer.writerows(batch)
            else:
                encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
                for batch in row_batches():
                    text.write(
                        "".join(
                            [encode(dict(zip(HEADER, row, strict=True))) + "\n" for row in batch]
                        )
                    )
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return SampleSummary(
        rows=rows, valid=valid, invalid=invalid, duplicates=duplicates, blank=blank
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write a sample segment and print one line of counts."""
    parser = argparse.ArgumentParser(
        prog="python -m exporter.core.samples",
        description="Write a realistic sample customer segment (.csv/.jsonl, optionally .gz).",
    )
    parser.add_argument("--rows", type=int, required=True, help="data rows to write")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    parser.add_argument("--out", required=True, help="output file: .csv, .jsonl, .csv.gz, ...")
    parser.add_argument("--invalid-rate", type=float, default=0.01, help="default 0.01")
    parser.add_argument("--duplicate-rate", type=float, default=0.01, help="default 0.01")
    parser.add_argument("--blank-rate", type=float, default=0.0, help="default 0.0")
    args = parser.parse_args(argv)
    try:
        s = generate(
            args.out,
            args.rows,
            args.seed,
            invalid_rate=args.invalid_rate,
            duplicate_rate=args.duplicate_rate,
            blank_rate=args.blank_rate,
        )
    except ValueError as e:
        parser.error(str(e))
    except OSError as e:
        parser.exit(1, f"{parser.prog}: error: cannot write {args.out}: {e.strerror or e}\n")
    print(
        f"wrote {s.rows:,} rows to {args.out}: {s.valid:,} valid, {s.invalid:,} invalid emails, "
        f"{s.duplicates:,} duplicates, {s.blank:,} blank"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
