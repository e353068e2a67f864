import pytest

from exporter.core.errors import MappingError
from exporter.core.mapping import FieldMapping, field_spec, normalise_column
from exporter.core.samples import HEADER


def resolved(columns, *items):
    m = FieldMapping.parse(items).resolve(columns)
    return {f.name: c for f, c in zip(m.fields, m.columns, strict=True)}


def test_default_mapping_recognises_customer_insights_columns():
    assert resolved(HEADER) == {  # the columns of a Customer Insights export
        "email": "PrimaryEmail",
        "first_name": "FirstName",
        "last_name": "LastName",
        "city": "City",
        "state_province_region": "StateProvince",
        "postal_code": "PostalCode",
        "country": "CountryRegion",
    }


@pytest.mark.parametrize(
    "column", ["Email", "EMAIL", "email_address", "Email Address", "emailaddress1", "E-Mail"]
)
def test_email_aliases_are_case_and_punctuation_insensitive(column):
    assert resolved([column, "x"])["email"] == column


def test_email_is_always_first_and_indices_point_at_columns():
    m = FieldMapping().resolve(["Zip", "first name", "EMAIL"])
    assert [f.name for f in m.fields] == ["email", "first_name", "postal_code"]
    assert m.indices == (2, 1, 0)


def test_best_alias_wins_when_two_columns_match():
    assert resolved(["EmailAddress", "Email"])["email"] == "Email"


def test_explicit_mapping_wins_over_defaults():
    got = resolved(["Email", "WorkEmail", "Given"], "email=WorkEmail", "first_name=Given")
    assert got == {"email": "WorkEmail", "first_name": "Given"}


def test_explicit_column_matches_loosely_when_not_exact():
    assert resolved(["Work Email"], "email=work_email")["email"] == "Work Email"


def test_empty_column_unmaps_a_default_field():
    assert "first_name" not in resolved(["Email", "FirstName"], "first_name=")


def test_custom_fields_come_after_reserved_fields():
    m = FieldMapping.parse(["custom:tier=LoyaltyTier"]).resolve(["LoyaltyTier", "Email"])
    assert [f.name for f in m.fields] == ["email", "custom:tier"]
    assert m.fields[1].kind == "custom"


def test_no_email_column_names_the_columns():
    with pytest.raises(MappingError, match=r"no column is mapped to email.*'Name', 'Phone'"):
        FieldMapping().resolve(["Name", "Phone"])


def test_explicit_column_missing_is_a_clear_error():
    with pytest.raises(MappingError, match=r"column 'Mail' mapped to email is not in the file"):
        FieldMapping.parse(["email=Mail"]).resolve(["Email"])


def test_explicit_column_that_appears_twice_is_ambiguous():
    with pytest.raises(MappingError, match="appears more than once"):
        FieldMapping.parse(["email=Mail"]).resolve(["Mail", "Mail"])


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("firstname=First", "unknown SendGrid field 'firstname'"),
        ("custom:=X", "unknown SendGrid field 'custom:'"),
        ("email", "not of the form FIELD=COLUMN"),
        ("=Email", "not of the form FIELD=COLUMN"),
    ],
)
def test_bad_mapping_items(item, message):
    with pytest.raises(MappingError, match=message):
        FieldMapping.parse([item])


def test_a_field_mapped_twice_is_an_error():
    with pytest.raises(MappingError, match="mapped twice"):
        FieldMapping.parse(["email=A", "email=B"])


def test_field_specs_carry_sendgrid_limits():
    assert field_spec("first_name").max_length == 50
    assert field_spec("city").max_length == 60
    assert field_spec("email").max_length == 254
    assert field_spec("custom:Tier").kind == "custom"
    assert normalise_column(" State / Province ") == "stateprovince"


@pytest.mark.parametrize(
    "column",
    [
        "E-Mail-Adresse",
        "E-Mail",
        "Email Address",
        "e_mail",
        "E-mail address",
        "Mail",
        "courriel",
        "Adresse e-mail",
        "Adresse électronique",
        "correo electrónico",
        "Correo Electrónico",
        "Dirección de correo electrónico",
        "Endereço de e-mail",
        "Indirizzo email",
        "E-mailadres",
        "E-post",
        "Sähköposti",
        "\ufeffE-Mail-Adresse",  # a BOM left on the header's first cell
    ],
)
def test_localised_email_columns_are_recognised(column):
    assert resolved(["Vorname", column, "Ort"])["email"] == column


def test_accents_and_separators_do_not_matter_when_normalising():
    assert normalise_column("Correo-Electrónico") == "correoelectronico"
    assert normalise_column("E_MAIL-ADRESSE") == normalise_column("e-mail adresse")
    assert normalise_column("Straße") == "strasse"


def test_a_likely_email_column_is_suggested_when_none_is_recognised():
    with pytest.raises(MappingError, match=r"e\.g\. email=WorkMailbox"):
        FieldMapping().resolve(["Name", "WorkMailbox"])
    with pytest.raises(MappingError, match=r"e\.g\. email=COLUMN"):
        FieldMapping().resolve(["Name", "Phone"])
