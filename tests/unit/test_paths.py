"""Names from outside data: decoded as a server would, and refused (never repaired) when they
could leave their container or prefix; segment names."""

from __future__ import annotations

import pytest

from exporter.core import paths


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("ci/BlobExport/a.csv", "ci/BlobExport/a.csv"),
        ("a%20b.csv", "a b.csv"),
        ("%2e%2e/x", "../x"),
        ("%2E%2E/x", "../x"),
        ("%252e%252e/x", "../x"),  # encoded twice
        ("%25252e%25252e/x", "../x"),  # three times: still decoded
        ("..%2F..%2Fexporter", "../../exporter"),
        ("50%.csv", "50%.csv"),  # a lone '%' is a character
        ("%zz.csv", "%zz.csv"),
        ("caf%C3%A9.csv", "café.csv"),
    ],
)
def test_names_are_percent_decoded_until_they_stop_changing(raw: str, decoded: str) -> None:
    assert paths.decode(raw) == decoded


def test_decoding_is_bounded() -> None:
    with pytest.raises(paths.PathError, match="more than 3 times"):
        paths.decode("%2525252e%2525252e/x")
    with pytest.raises(paths.PathError, match="not UTF-8"):
        paths.decode("a%ff.csv")


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("../exporter/state/d/s/l/index", "'..' segment"),
        ("%2e%2e/exporter/state/d/s/l/index", "'..' segment"),
        ("%252e%252e/exporter/x", "'..' segment"),
        ("ci/../../exporter/x", "'..' segment"),
        ("ci/..", "'..' segment"),
        ("ci/./a.csv", "'.' segment"),
        (".", "'.' segment"),
        ("ci\\..\\..\\x", "'..' segment"),
        ("ci\\a.csv", "backslash"),
        ("/etc/passwd", "absolute path"),
        ("%2Fetc/passwd", "absolute path"),
        ("\\\\server\\share", "absolute path"),
        ("ci//a.csv", "empty segment"),
        ("ci/", "empty segment"),
        ("", "empty"),
        ("ci/a\x00.csv", "control character"),
        ("ci/a%0d%0a.csv", "control character"),
        ("ci/a\x85.csv", "control character"),
        ("ci/a\u202e.csv", "invisible character"),
        ("ci/a\u200b.csv", "invisible character"),
        ("ci/a\u2028.csv", "invisible character"),
        ("ci/" + "a" * 1022, "1,025 characters"),
        ("/".join(["a"] * 255), "255 path segments"),
        ("ci/export./a.csv", "ends with '.'"),
        ("ci/...", "ends with '.'"),
    ],
)
def test_names_that_could_leave_their_container_are_refused(raw: str, problem: str) -> None:
    with pytest.raises(paths.PathError) as info:
        paths.blob_name(raw)
    assert problem in str(info.value)
    assert len(str(info.value)) < 400  # the name is shown cut short


@pytest.mark.parametrize(
    "name",
    [
        "ci/BlobExport/HighValue/2026/11/24/1433/HighValue_1.csv",
        "a",
        "a.b/c.d.csv",
        "ci/..a/b..c/a..csv",  # dots inside a segment are characters
        "ci/a b.csv",
        "ci/Zoë #1?.csv",
        "ci/" + "a" * 1021,  # 1,024 characters
        "/".join(["a"] * 254),
    ],
)
def test_ordinary_names_pass(name: str) -> None:
    assert paths.blob_name(name) == name


def test_a_name_can_be_held_inside_a_folder() -> None:
    assert paths.blob_name("ci/BlobExport/a.csv", within="ci/BlobExport") == "ci/BlobExport/a.csv"
    assert paths.blob_name("ci/BlobExport/x/a.csv", within="ci/BlobExport/") == (
        "ci/BlobExport/x/a.csv"
    )
    for outside in ("ci/BlobExport2/a.csv", "ci/a.csv", "ci/BlobExport", "other/a.csv"):
        with pytest.raises(paths.PathError, match="is not inside 'ci/BlobExport/'"):
            paths.blob_name(outside, within="ci/BlobExport")


def test_decoded_names_are_taken_as_they_are() -> None:
    # a real blob may hold '%' sequences: checked as written, never decoded again
    assert paths.blob_name("ci/a%2e%2e.csv", decoded=True) == "ci/a%2e%2e.csv"
    assert paths.escape_problem("loyal/a%2F..%2Fb.csv") is None
    assert paths.escape_problem("loyal/export 1.csv") is None
    assert paths.escape_problem("loyal/..") == "it holds a '..' segment"


@pytest.mark.parametrize("name", ["loyal", "High-Value_2", "A", "0", "a" * 63])
def test_segment_names_are_letters_digits_dashes_and_underscores(name: str) -> None:
    assert paths.valid_segment(name)
    assert paths.segment_problem(name) is None


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        ("..", "'.'"),
        (".", "'.'"),
        ("a/b", "'/'"),
        ("a\\b", "'\\\\'"),
        ("a b", "a space"),
        (" a", "a space"),
        ("a\n", "U+000A"),
        ("a\u202e", "U+202E"),
        ("café", "'é'"),
        ("a#b", "'#'"),
        ("=HYPERLINK(1)", "'='"),
        ("a" * 64, "64 characters"),
        ("a" * 40_000, "40,000 characters"),
    ],
)
def test_other_names_are_not_segment_names(name: str, problem: str) -> None:
    assert not paths.valid_segment(name)
    found = paths.segment_problem(name)
    assert found is not None and problem in found


def test_shown_names_are_quoted_and_cut_short() -> None:
    assert paths.shown("a\nb") == "'a\\nb'"
    long = paths.shown("x" * 5000)
    assert len(long) < 200 and "5,000 characters" in long
