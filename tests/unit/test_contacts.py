import json

import pytest

from exporter.core.contacts import (
    CUSTOM_TEXT_MAX,
    REJECT_REASONS,
    ContactBuilder,
    date_value,
    email_problem,
    number_value,
    truncate,
)
from exporter.core.mapping import CustomField, field_spec
from exporter.core.snapshots.input_limits import FIELD_CAP
from exporter.core.snapshots.records import RowProblem


def builder(*names, fields=None):
    return ContactBuilder([field_spec(n) for n in ("email", *names)], fields)


def contact(b, *values):
    built = b.build(values)
    assert isinstance(built, tuple), built
    email, text, _mask = built
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

    from exporter.core.mapping import FieldMapping
    from exporter.core.planning import plan_file

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
    # The first five valid ones, in one order (sorted), whatever order the file has them in.
    assert body["alternate_emails"] == ["1@b.co", "2@b.co", "x@b.co", "y@b.co", "z@b.co"]
    assert b.warnings == {"alternate_email_invalid": 1, "alternate_emails_over_limit": 1}


def test_phone_number_is_normalised_or_dropped_with_a_warning():
    b = builder("phone_number_id")
    assert contact(b, "a@b.co", "+1 (415) 555-0100")[1]["phone_number_id"] == "+14155550100"
    assert "phone_number_id" not in contact(b, "a@b.co", "call me")[1]
    assert b.warnings == {"phone_number_id_invalid": 1}


def test_custom_fields_are_keyed_by_id_when_known():
    b = builder("custom:tier", "custom:score", fields={"tier": CustomField("e1_T", "tier", "Text")})
    _, body = contact(b, "a@b.co", "Gold", "7")
    assert body == {"email": "a@b.co", "custom_fields": {"e1_T": "Gold", "score": "7"}}
    _, body = contact(b, "a@b.co", "", "")
    assert "custom_fields" not in body


TYPED = {
    "tier": CustomField("e1_T", "tier", "Text"),
    "lifetime_value": CustomField("e2_N", "lifetime_value", "Number"),
    "first_order": CustomField("e3_D", "first_order", "Date"),
}


def typed_builder():
    return builder("custom:tier", "custom:lifetime_value", "custom:first_order", fields=TYPED)


def test_typed_custom_values_are_sent_as_sendgrid_expects_them():
    _, text, _ = typed_builder().build(("a@b.co", "Gold", "1234.50", "2024-05-01"))
    assert text == (
        '{"email":"a@b.co","custom_fields":'
        '{"e1_T":"Gold","e2_N":1234.5,"e3_D":"05/01/2024"}}'  # a JSON number; MM/DD/YYYY
    )
    _, body = contact(typed_builder(), "a@b.co", "", "-3", "")
    assert body["custom_fields"] == {"e2_N": -3}


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        ("1234.5", "1234.5"),
        ("-3", "-3"),
        ("0", "0"),
        ("1e6", "1000000"),
        ("1000000.0", "1000000"),
        ("1234.50", "1234.5"),
        ("2.5E-3", "0.0025"),
        ("1e20", "1e+20"),
        ("-0", "0"),
        ("+5", "5"),
        ("007", "7"),
        (".5", "0.5"),
        ("-.5", "-0.5"),
        ("5.", "5"),
        ("1,234", None),  # 1234 or 1.234? rejected rather than guessed
        ("1 234", None),
        ("1.234,5", None),
        ("$5", None),
        ("5%", None),
        ("nan", None),
        ("inf", None),
        ("-Infinity", None),
        ("1e999", None),  # not finite as a double
        ("9" * 400, None),
        ("0x10", None),
        ("1_000", None),
        ("\u0661\u0662", None),  # Arabic-Indic digits: Python's float() takes them, JSON does not
        ("12abc", None),
        ("e5", None),
    ],
)
def test_number_values(value, sent):
    assert number_value(value) == sent


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        ("2024-05-01", "05/01/2024"),
        ("2024-12-31T23:59:59Z", "12/31/2024"),
        ("2024-05-01T23:30:00-05:00", "05/01/2024"),  # the date as written, not moved to UTC
        ("2024-05-01 10:00", "05/01/2024"),
        ("2024-05-01T10:00:00.1234567+0100", "05/01/2024"),
        ("2024-02-29", "02/29/2024"),
        ("5/1/2024", "05/01/2024"),
        ("05/01/2024", "05/01/2024"),
        ("2023-02-29", None),  # no such day
        ("2024-13-01", None),
        ("2024-05-01T25:00", None),
        ("2024-5-1", None),
        ("13/01/2024", None),  # day first: not SendGrid's order, and not guessed
        ("0000-01-01", None),
        ("01.05.2024", None),
        ("May 1, 2024", None),
        ("20240501", None),
        ("yesterday", None),
    ],
)
def test_date_values(value, sent):
    assert date_value(value) == sent


@pytest.mark.parametrize(
    ("values", "reason", "field"),
    [
        (("a@b.co", "Gold", "1,234", "2024-05-01"), "custom_field_not_a_number", "lifetime_value"),
        (("a@b.co", "Gold", "12", "2024-02-30"), "custom_field_not_a_date", "first_order"),
        (("a@b.co", "Gold", "12", "31/12/2024"), "custom_field_not_a_date", "first_order"),
    ],
)
def test_a_value_that_does_not_fit_its_field_type_rejects_the_row(values, reason, field):
    built = typed_builder().build(values)
    assert isinstance(built, RowProblem)
    assert built.reason == reason
    assert reason in REJECT_REASONS
    assert f"custom:{field}" in built.message
    assert values[2] not in built.message and values[3] not in built.message  # no row values


def test_over_long_custom_text_is_truncated_to_sendgrids_limit_with_a_warning():
    b = typed_builder()
    _, body = contact(b, "a@b.co", "x" * (CUSTOM_TEXT_MAX + 5), "", "")
    assert body["custom_fields"]["e1_T"] == "x" * CUSTOM_TEXT_MAX
    assert b.warnings == {"custom:tier_truncated": 1}
    built = b.build(("a@b.co", "x" * (FIELD_CAP + 1), "", ""))
    assert isinstance(built, RowProblem) and built.reason == "field_too_large"


def test_typed_values_over_our_cap_are_too_large_rather_than_not_a_number():
    built = typed_builder().build(("a@b.co", "", "9" * (FIELD_CAP + 1), ""))
    assert isinstance(built, RowProblem) and built.reason == "field_too_large"


def test_a_dry_run_checks_the_type_the_mapping_declares():
    b = builder("custom:tier", "custom:ltv:Number", "custom:since:date")
    _, body = contact(b, "a@b.co", "t" * 1200, "1e3", "2024-05-01")
    assert body["custom_fields"] == {"tier": "t" * 1200, "ltv": 1000, "since": "05/01/2024"}
    built = b.build(("a@b.co", "", "lots", ""))
    assert isinstance(built, RowProblem) and built.reason == "custom_field_not_a_number"


def test_sendgrids_type_wins_over_none_declared_and_rows_without_custom_values_pass():
    b = builder("first_name", "custom:lifetime_value", fields=TYPED)
    assert contact(b, "a@b.co", "Ann", "")[1] == {"email": "a@b.co", "first_name": "Ann"}
    built = b.build(("a@b.co", "Ann", "n/a"))
    assert isinstance(built, RowProblem) and built.reason == "custom_field_not_a_number"


def test_email_problem_never_echoes_the_address():
    for bad in ["secret.person@", "secret person@x.com", "secret@x"]:
        assert "secret" not in email_problem(bad)


def test_date_answers_are_remembered_up_to_a_bound_and_stay_right(monkeypatch):
    import exporter.core.contacts

    monkeypatch.setattr(exporter.core.contacts, "_DATE_CACHE", 2)
    b = builder("custom:since:Date")
    days = ["2024-05-01", "bad", "2024-05-01", "2024-05-02", "2024-05-03", "bad", "2024-05-03"]
    answers = [b.build(("a@b.co", day)) for day in days]
    assert [a[1] if isinstance(a, tuple) else a.reason for a in answers] == [
        '{"email":"a@b.co","custom_fields":{"since":"05/01/2024"}}',
        "custom_field_not_a_date",
        '{"email":"a@b.co","custom_fields":{"since":"05/01/2024"}}',
        '{"email":"a@b.co","custom_fields":{"since":"05/02/2024"}}',
        '{"email":"a@b.co","custom_fields":{"since":"05/03/2024"}}',
        "custom_field_not_a_date",
        '{"email":"a@b.co","custom_fields":{"since":"05/03/2024"}}',
    ]


def test_the_mask_says_which_mapped_fields_went_into_the_contact():
    b = builder("first_name", "city", "phone_number_id", "alternate_emails", "custom:tier")
    built = b.build(("a@b.co", "Ann", "", "call me", "x@y.co", "Gold"))
    assert isinstance(built, tuple)
    _, text, mask = built
    # first_name (bit 0), alternate_emails (bit 3) and tier (bit 4); the blank city and the
    # phone number that is not one were left out.
    assert mask == 0b11001
    assert set(json.loads(text)) == {"email", "first_name", "alternate_emails", "custom_fields"}


def test_values_spelled_differently_build_the_same_contact():
    b = typed_builder()
    one = b.build(("a@b.co", "Gold", "1e3", "2024-05-01T10:00:00Z"))
    two = b.build(("a@b.co", "Gold", "1000.0", "5/1/2024"))
    assert isinstance(one, tuple) and one == two
    alternates = builder("alternate_emails")
    assert alternates.build(("a@b.co", "y@b.co,x@b.co")) == alternates.build(
        ("a@b.co", "X@b.co; y@b.co")
    )
