"""Which snapshot column feeds which SendGrid contact field.

SendGrid's reserved fields and their limits come from the official contacts spec
(`ContactRequest` in tsg_mc_contacts_v3); custom fields are written `custom:NAME`, or
`custom:NAME:TYPE` to declare the type (Text, Number, Date) that values are checked against and
that a missing field is created with (see `exporter.flow.fields`). A default
mapping recognises the column names common in CDP exports (Customer Insights, Dataverse, CSV
exports of CRMs) case- and punctuation-insensitively; an explicit mapping always wins.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from exporter.core.errors import MappingError

FieldKind = Literal["email", "text", "identifier", "emails", "phone", "custom"]
FieldType = Literal["Text", "Number", "Date"]
"""The types of a SendGrid custom field (`FieldType` in tsg_mc_custom_fields_v3)."""
FIELD_TYPES: dict[str, FieldType] = {"text": "Text", "number": "Number", "date": "Date"}
"""Case-folded type name -> the spelling SendGrid uses."""


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """A SendGrid contact field: its name, the limit SendGrid enforces, and how we treat it.

    A custom field's `name` is `custom:NAME` without any type; `field_type` is the type its
    mapping declares (`custom:NAME:Number`), None when the mapping leaves it to SendGrid.
    """

    name: str
    kind: FieldKind
    max_length: int | None = None
    field_type: FieldType | None = None

    @property
    def custom_name(self) -> str:
        """The SendGrid name of a custom field (`tier` for `custom:tier`)."""
        return self.name[len(CUSTOM_PREFIX) :]


@dataclass(frozen=True, slots=True)
class CustomField:
    """A custom field as SendGrid defines it: values are sent keyed by `id` (`e1_T`), checked
    against `field_type`. `name` is SendGrid's spelling (names are case-insensitively unique)."""

    id: str
    name: str
    field_type: FieldType


CUSTOM_PREFIX = "custom:"
MAX_ALTERNATE_EMAILS = 5  # ContactRequest.alternate_emails.maxItems

# In the order fields appear in a payload. Limits from ContactRequest in the official spec.
RESERVED_FIELDS: dict[str, FieldSpec] = {
    spec.name: spec
    for spec in (
        FieldSpec("email", "email", 254),
        FieldSpec("first_name", "text", 50),
        FieldSpec("last_name", "text", 50),
        FieldSpec("address_line_1", "text", 100),
        FieldSpec("address_line_2", "text", 100),
        FieldSpec("city", "text", 60),
        FieldSpec("state_province_region", "text", 50),
        FieldSpec("postal_code", "text", None),
        FieldSpec("country", "text", 50),
        FieldSpec("alternate_emails", "emails", 254),
        FieldSpec("phone_number_id", "phone", None),
        FieldSpec("external_id", "identifier", 254),
        FieldSpec("anonymous_id", "identifier", 254),
    )
}

# Normalised column names (see `normalise_column`) recognised by default, best match first.
DEFAULT_ALIASES: dict[str, tuple[str, ...]] = {
    "email": (
        "email",
        "emailaddress",
        "primaryemail",
        "primaryemailaddress",
        "emailaddress1",  # Dataverse / Dynamics 365 contact
        "mail",
        "contactemail",
        "mailaddress",
        # Localised headers, as `normalise_column` leaves them (no separators, case or accents).
        "emailadresse",  # de, da, no: E-Mail-Adresse, E-mailadresse
        "mailadresse",
        "emailadres",  # nl: E-mailadres
        "emailadress",  # sv
        "epost",  # no, sv: E-post
        "epostadresse",
        "epostadress",
        "courriel",  # fr
        "adressecourriel",
        "adressedecourriel",
        "adresseemail",
        "adressemail",
        "adresseelectronique",
        "correoelectronico",  # es: Correo electrónico
        "correo",
        "direcciondecorreo",
        "direcciondecorreoelectronico",
        "direccionemail",
        "enderecodeemail",  # pt: Endereço de e-mail
        "enderecoemail",
        "enderecodecorreioeletronico",
        "indirizzoemail",  # it
        "postaelettronica",
        "adresemail",  # pl
        "sahkoposti",  # fi: Sähköposti
        "sahkopostiosoite",
    ),
    "first_name": ("firstname", "givenname", "forename", "fname"),
    "last_name": ("lastname", "surname", "familyname", "lname"),
    "address_line_1": ("addressline1", "address1", "address1line1", "street", "streetaddress"),
    "address_line_2": ("addressline2", "address2", "address1line2"),
    "city": ("city", "town", "address1city", "locality"),
    "state_province_region": (
        "stateprovinceregion",
        "state",
        "stateprovince",
        "stateorprovince",
        "province",
        "region",
        "address1stateorprovince",
    ),
    "postal_code": ("postalcode", "zipcode", "zip", "postcode", "address1postalcode"),
    "country": ("country", "countryregion", "countryorregion", "countrycode", "address1country"),
    "alternate_emails": ("alternateemails", "secondaryemails", "otheremails"),
    "phone_number_id": ("phonenumberid",),
    "external_id": ("externalid",),
    "anonymous_id": ("anonymousid",),
}

_NON_WORD = re.compile(r"[\W_]+")


def normalise_column(name: str) -> str:
    """`Primary Email`, `primary_email` and `PRIMARYEMAIL` all become `primaryemail`; accents
    go too (`Correo electrónico` becomes `correoelectronico`)."""
    if not name.isascii():
        decomposed = unicodedata.normalize("NFKD", name)
        name = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NON_WORD.sub("", name).casefold()


def field_spec(name: str) -> FieldSpec:
    """The spec of a reserved field or of a `custom:NAME` field; MappingError if neither."""
    spec = RESERVED_FIELDS.get(name)
    if spec is not None:
        return spec
    if name.startswith(CUSTOM_PREFIX):
        # SendGrid field names hold only letters, digits and _, so a colon ends the name.
        custom, sep, declared = name[len(CUSTOM_PREFIX) :].partition(":")
        if custom.strip():
            if not sep:
                return FieldSpec(name, "custom", None)
            field_type = FIELD_TYPES.get(declared.strip().casefold())
            if field_type is None:
                raise MappingError(
                    f"unknown custom field type {declared!r} in {name!r}: "
                    "use custom:NAME:Text, custom:NAME:Number or custom:NAME:Date"
                )
            return FieldSpec(CUSTOM_PREFIX + custom, "custom", None, field_type)
    known = ", ".join(RESERVED_FIELDS)
    raise MappingError(
        f"unknown SendGrid field {name!r}: use one of {known}, or custom:NAME[:TYPE]"
    )


@dataclass(frozen=True, slots=True)
class ResolvedMapping:
    """The mapping fitted to one snapshot's columns. `fields[0]` is always `email`."""

    fields: tuple[FieldSpec, ...]
    columns: tuple[str, ...]
    indices: tuple[int, ...]

    def describe(self) -> str:
        return ", ".join(f"{f.name} <- {c}" for f, c in zip(self.fields, self.columns, strict=True))


@dataclass(frozen=True, slots=True)
class FieldMapping:
    """An explicit mapping (field -> column; None: leave the field unmapped) over the defaults."""

    explicit: Mapping[str, str | None] = field(default_factory=dict)
    use_defaults: bool = True

    @classmethod
    def parse(cls, items: Iterable[str], *, use_defaults: bool = True) -> FieldMapping:
        """Parse `FIELD=COLUMN` items as given on the command line (`first_name=GivenName`)."""
        explicit: dict[str, str | None] = {}
        seen: set[str] = set()
        for item in items:
            name, sep, column = item.partition("=")
            name = name.strip()
            if not sep or not name:
                raise MappingError(f"mapping {item!r} is not of the form FIELD=COLUMN")
            spec = field_spec(name)
            if spec.name in seen:  # also custom:x next to custom:x:Number
                raise MappingError(f"field {spec.name!r} is mapped twice")
            seen.add(spec.name)
            explicit[name] = column.strip() or None
        return cls(explicit, use_defaults)

    def resolve(self, columns: Sequence[str]) -> ResolvedMapping:
        """Fit the mapping to a header. Raises MappingError naming the columns when it cannot."""
        by_norm: dict[str, list[int]] = {}
        for i, col in enumerate(columns):
            by_norm.setdefault(normalise_column(col), []).append(i)

        chosen: dict[str, int] = {}
        for name, column in self.explicit.items():
            if column is not None:
                chosen[name] = self._find_explicit(name, column, columns, by_norm)
        if self.use_defaults:
            taken = set(chosen.values())
            for name, aliases in DEFAULT_ALIASES.items():
                if name in self.explicit:
                    continue
                for alias in aliases:
                    hits = [i for i in by_norm.get(alias, ()) if i not in taken]
                    if hits:
                        chosen[name] = hits[0]
                        taken.add(hits[0])
                        break

        if "email" not in chosen:
            shown = ", ".join(repr(c) for c in columns[:20]) or "none"
            more = f" and {len(columns) - 20} more" if len(columns) > 20 else ""
            likely = [c for c in columns if "mail" in normalise_column(c)]
            example = likely[0] if len(likely) == 1 else "COLUMN"
            if not (example.isprintable() and len(example) <= 64):
                example = "COLUMN"
            raise MappingError(
                f"no column is mapped to email (columns: {shown}{more}); "
                f"name the email column explicitly, e.g. email={example}"
            )
        order = [n for n in RESERVED_FIELDS if n in chosen]
        order += [n for n in chosen if n not in RESERVED_FIELDS]
        return ResolvedMapping(
            fields=tuple(field_spec(n) for n in order),
            columns=tuple(columns[chosen[n]] for n in order),
            indices=tuple(chosen[n] for n in order),
        )

    @staticmethod
    def _find_explicit(
        name: str, column: str, columns: Sequence[str], by_norm: Mapping[str, list[int]]
    ) -> int:
        exact = [i for i, c in enumerate(columns) if c == column]
        if len(exact) == 1:
            return exact[0]
        loose = list(by_norm.get(normalise_column(column), ()))
        if len(exact) > 1 or len(loose) > 1:
            raise MappingError(f"column {column!r} (mapped to {name}) appears more than once")
        if loose:
            return loose[0]
        shown = ", ".join(repr(c) for c in columns[:20]) or "none"
        raise MappingError(
            f"column {column!r} mapped to {name} is not in the file (columns: {shown})"
        )
