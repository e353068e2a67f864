import json

import pytest

from exporter.contacts import ContactBuilder, email_problem, truncate
from exporter.mapping import field_spec
from exporter.snapshots import FIELD_CAP, RowProblem


def builder(*names, ids=None):
    return ContactBuilder([field_spec(n) for n in ("email", *names)], ids)


def contact(b, *values):
    built = b.build(values)
    assert isinstance(built, tuple), built
    email, text = built
    return email, json.loads(text)


def test_email_is_trimmed_and_lower_cased():
    email, body = contact(builder(), "  Jose.Garcia@Example.COM \t")
    assert email == "jose.garcia@example.com"
    assert body == {"email": "jose.garcia@example.com"}


@pytest.mark.parametrize(
    "email",
    [
        "a@example.com",
        "first.last+tag@sub.example.co.uk",
        "o'brien@example.ie",
        "x_y-z@example-host.org",
        "user@xn--bcher-kva.example",
        "1234567890@example.museum",
        "a" * 64 + "@example.com",
    ],
)
def test_valid_emails(email):
    assert contact(builder(), email)[0] == email


@pytest.mark.parametrize(
    ("email", "message"),
    [
        ("jose.example.com", "no @"),
        ("a@@example.com", "more than one @"),
        ("a@b@example.com", "more than one @"),
        ("@example.com", "nothing before the @"),
        ("jose@", "nothing after the @"),
        ("jose garcia@example.com", "contains a space"),
        ("josé@example.com", "non-ASCII"),
        ("a" * 65 + "@example.com", "longer than 64"),
        ("jose..garcia@example.com", "misplaced dot"),
        (".jose@example.com", "misplaced dot"),
        ("jose.@example.com", "misplaced dot"),
        ("jo(se)@example.com", "character an address cannot have"),
        ("jose@example", "no dot"),
        ("jose@.example.com", "domain has a misplaced dot"),
        ("jose@example.com.", "domain has a misplaced dot"),
        ("jose@exa_mple.com", "not a valid host name"),
        ("jose@example.c", "not a valid host name"),
    ],
)
def test_invalid_emails_are_rejected_with_a_specific_message(email, message):
    built = builder().build((email,))
    assert isinstance(built, RowProblem)
    assert built.reason == "invalid_email"
    assert message in built.message
    assert email not in built.message  # no address in messages (they reach logs and reports)


def test_email_over_254_characters_is_rejected():
    email = "a@" + ".".join(["b" * 60] * 5) + ".com"
    built = builder().build((email,))
    assert isinstance(built, RowProblem)
    assert built.reason == "email_too_long"
    assert "254" in built.message


def test_missing_email():
    built = builder("first_name").build(("  ", "Ana"))
    assert built == RowProblem("missing_email", "the email field is empty")


def test_fields_are_trimmed_and_blank_ones_omitted():
    _, body = contact(builder("first_name", "last_name", "city"), "a@b.co", " Zoë ", "", "  ")
    assert body == {"email": "a@b.co", "first_name": "Zoë"}


def test_json_special_characters_survive():
    _, body = contact(builder("first_name"), "a@b.co", 'Ann "the \\ one"\tX')
    assert body["first_name"] == 'Ann "the \\ one"\tX'


def test_over_long_optional_field_is_truncated_with_a_warning():
    b = builder("first_name", "city")
    _, body = contact(b, "a@b.co", "Å" * 60, "x" * 61)
    assert body["first_name"] == "Å" * 50
    assert body["city"] == "x" * 60
    assert b.warnings == {"first_name_truncated": 1, "city_truncated": 1}


def test_truncation_keeps_combining_marks_with_their_letter():
    value = "a" * 49 + "e\u0301" + "zz"  # the accent is the 51st code point
    assert truncate(value, 50) == "a" * 49
    assert truncate("ab  cd", 4) == "ab"
    # cutting inside a joined emoji (woman, ZWJ, laptop) drops the whole sequence
    assert truncate("x" * 10 + "\U0001f469\u200d\U0001f4bb", 11) == "x" * 10


def test_field_without_sendgrid_limit_over_our_cap_rejects_the_row():
    built = builder("postal_code").build(("a@b.co", "9" * (FIELD_CAP + 1)))
    assert isinstance(built, RowProblem)
    assert built.reason == "field_too_large"
    assert "postal_code" in built.message


@pytest.mark.parametrize("field", ["first_name", "custom:notes"])
def test_mapped_field_over_our_cap_rejects_the_row_even_with_a_sendgrid_limit(field):
    built = builder(field).build(("a@b.co", "y" * (FIELD_CAP + 1)))
    assert isinstance(built, RowProblem)
    assert built.reason == "field_too_large"


def test_multi_line_quoted_field_over_the_cap_is_rejected_through_the_reader():
    import io

    from exporter.mapping import FieldMapping
    from exporter.planning import plan_file

    note = "\n".join(["x" * 1000] * 70)  # 70 KB in short lines: no long physical line
    data = f'Email,Note\na@b.co,"{note}"\nc@d.co,ok\n'.encode()
    rejects = []
    stats = plan_file(
        io.BytesIO(data),
        FieldMapping.parse(["custom:note=Note"]),
        name="x.csv",
        on_reject=rejects.append,
    )
    assert [(r.row, r.reason) for r in rejects] == [(1, "field_too_large")]
    assert stats.valid == 1


def test_over_long_identifier_rejects_rather_than_truncates():
    built = builder("external_id").build(("a@b.co", "x" * 255))
    assert isinstance(built, RowProblem)
    assert built.reason == "identifier_too_long"
    assert contact(builder("external_id"), "a@b.co", "x" * 254)[1]["external_id"] == "x" * 254


def test_alternate_emails_are_normalised_filtered_and_capped():
    b = builder("alternate_emails")
    _, body = contact(
        b, "a@b.co", "X@b.co; bad@; a@b.co, y@b.co y@b.co,z@b.co;1@b.co;2@b.co;3@b.co"
    )
    assert body["alternate_emails"] == ["x@b.co", "y@b.co", "z@b.co", "1@b.co", "2@b.co"]
    assert b.warnings == {"alternate_email_invalid": 1, "alternate_emails_over_limit": 1}


def test_phone_number_is_normalised_or_dropped_with_a_warning():
    b = builder("phone_number_id")
    assert contact(b, "a@b.co", "+1 (415) 555-0100")[1]["phone_number_id"] == "+14155550100"
    assert "phone_number_id" not in contact(b, "a@b.co", "call me")[1]
    assert b.warnings == {"phone_number_id_invalid": 1}


def test_custom_fields_are_keyed_by_id_when_known():
    b = builder("custom:tier", "custom:score", ids={"tier": "e1_T"})
    _, body = contact(b, "a@b.co", "Gold", "7")
    assert body == {"email": "a@b.co", "custom_fields": {"e1_T": "Gold", "score": "7"}}
    _, body = contact(b, "a@b.co", "", "")
    assert "custom_fields" not in body


def test_email_problem_never_echoes_the_address():
    for bad in ["secret.person@", "secret person@x.com", "secret@x"]:
        assert "secret" not in email_problem(bad)
