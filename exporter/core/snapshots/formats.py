"""What kind of file a snapshot is: its format by its name, and by its first bytes the files
people export by mistake (a workbook, a PDF, UTF-16 text), refused with a message that says what
they are instead of a CSV error on line 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from exporter.core.errors import SnapshotError

Format = Literal["csv", "jsonl"]

_CSV_SUFFIXES: Final = {".csv", ".tsv", ".txt", ".psv"}
_JSONL_SUFFIXES: Final = {".jsonl", ".ndjson", ".json"}

# Leading bytes of files people export by mistake, and what to tell them.
_SIGNATURES: Final = (
    (b"\xef\xbb\xbf", None),  # UTF-8 byte-order mark: fine, skipped
    (b"\xff\xfe", "UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8"),
    (b"PK\x03\x04", "a ZIP archive or an Excel workbook; export the segment as CSV or JSON Lines"),
    (b"\xd0\xcf\x11\xe0", "an Excel 97-2003 workbook; export the segment as CSV or JSON Lines"),
    (b"%PDF", "a PDF document, not a CSV or JSON Lines file"),
    (b"PAR1", "a Parquet file; export the segment as CSV or JSON Lines"),
    (b"\x89PNG", "a PNG image, not a CSV or JSON Lines file"),
    (b"\xff\xd8\xff", "a JPEG image, not a CSV or JSON Lines file"),
)


def detect_format(name: str) -> Format | None:
    """The format a file name announces (`.csv`, `.jsonl`, with or without `.gz`), if any."""
    suffixes = [s.lower() for s in Path(name).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    if suffixes and suffixes[-1] in _CSV_SUFFIXES:
        return "csv"
    if suffixes and suffixes[-1] in _JSONL_SUFFIXES:
        return "jsonl"
    return None


def check_signature(head: bytes) -> int:
    """How many leading bytes of the (decompressed) file to skip: those of a UTF-8 byte-order
    mark, else 0. A file that starts like a known non-text format raises `binary_file`."""
    for signature, problem in _SIGNATURES:
        if head.startswith(signature):
            if problem is None:
                return len(signature)
            raise SnapshotError("binary_file", f"the file is {problem}", offset=0)
    return 0
