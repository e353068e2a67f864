"""Turn one mapped row into a SendGrid contact, or say exactly why it cannot be one.

This is the hot path (a million rows per run): a contact is built directly as its compact JSON
text (the fragment that goes into the upsert body), so its size is known exactly and nothing is
serialised twice. Blank optional fields are left out, so an upsert never blanks a value that
SendGrid already holds; SendGrid leaves omitted fields as they were.

Custom field values are checked against their field's type before they are sent: SendGrid
errors a contact whose value does not fit (and reports it only in the job's error file), so a
bad value rejects the row here, with a reason in the reject report.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from decimal import Decimal
from json.encoder import encode_basestring  # the C encoder; keeps non-ASCII as UTF-8
from typing import Final

from exporter.core.mapping import MAX_ALTERNATE_EMAILS, CustomField, FieldSpec, FieldType
from exporter.core.snapshots.input_limits import FIELD_CAP
from exporter.core.snapshots.records import RowProblem

EMAIL_MAX: Final = 254
CUSTOM_TEXT_MAX: Final = 1000
"""SendGrid's limit on a text custom field value, in characters (its custom fields guide)."""
_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_TLD = r"(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})"
# RFC 5321 dot-atom local part (at most 64 characters) @ a DNS name with a real top-level domain,
# after lower-casing. No quoted local parts, IP literals or non-ASCII: SendGrid accepts none of them
# reliably, and one bad address can fail a whole batch.
EMAIL_RE: Final = re.compile(rf"(?=[^@]{{1,64}}@){_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+{_TLD}")
_PHONE_STRIP = re.compile(r"[\s().-]+")
_PHONE_RE: Final = re.compile(r"\+[1-9][0-9]{6,14}")
_LIST_SPLIT = re.compile(r"[\s,;]+")
# A number as JSON writes it (sent as it is), and the other plain decimal spellings we accept
# (`+5`, `007`, `.5`, `5.`; sent normalised). No thousands separators, decimal commas, currency
# signs, `nan` or `inf`: "1,234" could be 1234 or 1.234, so it is rejected rather than guessed.
_JSON_NUMBER: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_DECIMAL: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# ISO 8601 date, optionally with a time (the date is taken as written, whatever the offset: a
# Date field holds a day), or SendGrid's own M/D/YYYY.
_ISO_DATE: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::(?:[0-5][0-9]|60)(?:[.,][0-9]+)?)?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)?)?"
)
_US_DATE: Final = re.compile(r"([0-9]{1,2})/([0-9]{1,2})/([0-9]{4})")
_EXACT_INTEGERS: Final = 2.0**53
"""Whole numbers below this are written as integers (a double holds each of them exactly)."""
_DATE_CACHE: Final = 20_000
"""Distinct date values remembered per Date field (about 2 MB at most)."""

REJECT_REASONS: Final = {
    "missing_email": "the email field is empty",
    "invalid_email": "the email is not a valid address",
    "email_too_long": f"the email is longer than {EMAIL_MAX} characters",
    "identifier_too_long": "external_id or anonymous_id is longer than SendGrid allows",
    "contact_too_large": "the contact alone is larger than one upsert request may be",
    "bad_unicode": "a field holds text that cannot be encoded as UTF-8",
    "ragged_row": "the row has a different number of fields than the header",
    "too_many_fields": "the row has more than max(2 x the header's columns, 1,000) fields",
    "field_too_large": "a field is longer than 64 KiB",
    "nul_byte": "a field holds a NUL character",
    "invalid_json": "a JSON Lines line is not valid JSON",
    "not_json_object": "a JSON Lines line is not a JSON object",
    "bad_value": "a JSON value is an object or array where text is expected",
    "line_too_long": "a line (CSV or JSON Lines) is longer than 1 MiB; it was skipped unread",
    "custom_field_not_a_number": "a value mapped to a Number custom field is not a number",
    "custom_field_not_a_date": "a value mapped to a Date custom field is not a date",
}
"""Every reason code a rejected row can carry, with what it means (README lists them too)."""

_MISSING_EMAIL: Final = RowProblem("missing_email", "the email field is empty")

Built = tuple[str, str, int] | RowProblem
"""(normalised email, contact JSON, which fields it holds) or the problem that rejects the row.

The third item is a bit mask over the mapped fields after email: bit `i - 1` is set when field
`i` of the mapping went into the contact (a blank field, an invalid phone number or a list of
only invalid alternate emails is left out). Comparing a contact read back from SendGrid needs it:
only the fields we sent can be expected to hold our values."""
Step = Callable[[str, str], "str | RowProblem | None"]
"""(trimmed non-empty value, the row's email) -> JSON member, a problem, or None to omit it."""
Convert = Callable[[str], "str | RowProblem"]
"""A typed custom value (trimmed, non-empty) -> its JSON value text, or the problem."""


def email_problem(email: str) -> str:
    """Why a (lower-cased, trimmed) email is invalid, without repeating the address itself."""
    local, at, domain = email.partition("@")
    if not at:
        return "the email has no @"
    if "@" in domain:
        return "the email has more than one @"
    if not local:
        return "the email has nothing before the @"
    if not domain:
        return "the email has nothing after the @"
    if any(c.isspace() for c in email):
        return "the email contains a space"
    if not email.isascii():
        return "the email contains non-ASCII characters"
    if len(local) > 64:
        return "the part before the @ is longer than 64 characters"
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return "the part before the @ has a misplaced dot"
    if not re.fullmatch(rf"{_ATOM}(?:\.{_ATOM})*", local):
        return "the part before the @ holds a character an address cannot have"
    if "." not in domain:
        return "the domain has no dot (no top-level domain)"
    if domain.startswith(".") or domain.endswith(".") or ".." in domain:
        return "the domain has a misplaced dot"
    return "the domain is not a valid host name"


def truncate(value: str, limit: int) -> str:
    """Cut to at most `limit` characters without leaving half a character (a base letter
    separated from its combining accent, or half of a joined emoji) or trailing spaces."""
    cut = limit
    while cut > 0 and (unicodedata.combining(value[cut]) or value[cut] in "\u200d\ufe0f"):
        cut -= 1
    if cut > 0 and value[cut - 1] == "\u200d":
        cut -= 1
    return value[:cut].rstrip()


def number_value(value: str) -> str | None:
    """The JSON number for a plain decimal (`1234.5`, `-3`, `1e6`, `.5`), None for anything
    else (`1,234`, `$5`, `nan`, `inf`, a number too large for a double).

    One spelling per number (`1e6`, `1000000` and `1000000.0` all give `1000000`; `1234.50`
    gives `1234.5`), the double's shortest form: so the value SendGrid holds, read back from
    its list export, builds the same contact text as the value we sent."""
    if _JSON_NUMBER.fullmatch(value):
        number = float(value)
    elif _DECIMAL.fullmatch(value):
        number = float(Decimal(value))  # `+5`, `007`, `.5`, `5.`
    else:
        return None
    if not math.isfinite(number):
        return None
    if number.is_integer() and abs(number) < _EXACT_INTEGERS:
        return str(int(number))
    return repr(number)


def date_value(value: str) -> str | None:
    """`MM/DD/YYYY` (the form SendGrid documents for Date fields) for an ISO 8601 date or
    date-time, or an `M/D/YYYY` date; None for anything else, or a day no calendar has."""
    match = _ISO_DATE.fullmatch(value)
    if match is not None:
        year, month, day = match.group(1, 2, 3)
    else:
        match = _US_DATE.fullmatch(value)
        if match is None:
            return None
        month, day, year = match.group(1, 2, 3)
    try:
        parsed = date(int(year), int(month), int(day))
    except ValueError:
        return None
    return f"{parsed.month:02d}/{parsed.day:02d}/{parsed.year:04d}"


class ContactBuilder:
    """Builds contacts for one resolved mapping; counts warnings as it goes.

    `custom_fields` maps a custom field's name (as mapped) to its SendGrid definition: values are
    keyed by its id (`e1_T`) and checked against its type. Without it (a dry run) the name itself
    is the key, and values are checked against the type the mapping declares, if any.
    """

    def __init__(
        self,
        fields: Sequence[FieldSpec],
        custom_fields: Mapping[str, CustomField] | None = None,
    ) -> None:
        if not fields or fields[0].kind != "email":
            raise ValueError("the first mapped field must be email")
        self.warnings: Counter[str] = Counter()
        texts: list[tuple[int, str, int, int]] = []
        steps: list[tuple[int, Step, int]] = []
        customs: list[tuple[int, str, int, Convert | None, int]] = []
        for i, spec in enumerate(fields[1:], start=1):
            if spec.kind == "custom":
                defined = (custom_fields or {}).get(spec.custom_name)
                key = spec.custom_name if defined is None else defined.id
                field_type = spec.field_type if defined is None else defined.field_type
                limit = CUSTOM_TEXT_MAX if field_type == "Text" else FIELD_CAP
                convert = None if field_type in (None, "Text") else _convert(spec, field_type)
                customs.append((i, encode_basestring(key) + ":", limit, convert, 1 << (i - 1)))
            elif spec.kind == "text":
                limit = spec.max_length if spec.max_length is not None else FIELD_CAP
                texts.append((i, encode_basestring(spec.name) + ":", limit, 1 << (i - 1)))
            else:
                steps.append((i, self._step(spec), 1 << (i - 1)))
        self._names = [spec.name for spec in fields]
        self._texts = tuple(texts)
        self._steps = tuple(steps)
        self._customs = tuple(customs)

    def _step(self, spec: FieldSpec) -> Step:
        """The rarer field kinds: a function from a trimmed, non-empty value to its JSON member."""
        prefix = encode_basestring(spec.name) + ":"
        limit = spec.max_length
        warnings = self.warnings
        if spec.kind == "identifier":

            def identifier(value: str, email: str) -> str | RowProblem:
                if limit is not None and len(value) > limit:
                    return RowProblem(
                        "identifier_too_long",
                        f"{spec.name} is {len(value)} characters; SendGrid allows {limit}",
                    )
                return prefix + encode_basestring(value)

            return identifier
        if spec.kind == "phone":

            def phone(value: str, email: str) -> str | None:
                number = _PHONE_STRIP.sub("", value)
                if not _PHONE_RE.fullmatch(number):
                    warnings["phone_number_id_invalid"] += 1
                    return None
                return prefix + encode_basestring(number)

            return phone
        if spec.kind == "emails":
            return self._alternate_emails_step(prefix)
        raise ValueError(f"no step for field kind {spec.kind!r}")

    def _alternate_emails_step(self, prefix: str) -> Step:
        warnings = self.warnings

        def alternate_emails(value: str, primary: str) -> str | None:
            kept: list[str] = []
            for item in _LIST_SPLIT.split(value):
                email = item.lower()
                if not email or email == primary or email in kept:
                    continue
                if len(email) > EMAIL_MAX or not EMAIL_RE.fullmatch(email):
                    warnings["alternate_email_invalid"] += 1
                    continue
                kept.append(email)
            if len(kept) > MAX_ALTERNATE_EMAILS:
                warnings["alternate_emails_over_limit"] += 1
                del kept[MAX_ALTERNATE_EMAILS:]
            if not kept:
                return None
            kept.sort()  # one order, whatever order SendGrid keeps them in
            # Validated addresses hold no character that JSON must escape.
            return prefix + '["' + '","'.join(kept) + '"]'

        return alternate_emails

    def build(self, values: Sequence[str]) -> Built:
        """(email, contact JSON, field mask) for a valid row, else the RowProblem that rejects
        it (see `Built`)."""
        email = values[0].strip().lower()
        if not email:
            return _MISSING_EMAIL
        if len(email) > EMAIL_MAX:
            return RowProblem(
                "email_too_long", f"the email is {len(email)} characters; SendGrid allows 254"
            )
        if not EMAIL_RE.fullmatch(email):
            return RowProblem("invalid_email", email_problem(email))
        # A validated address holds no character that JSON must escape.
        parts = ['{"email":"' + email + '"']
        mask = 0
        for i, prefix, limit, bit in self._texts:
            value = values[i].strip()
            if value:
                if len(value) > limit:
                    cut = self._over_limit(i, value, limit)
                    if type(cut) is not str:
                        return cut  # type: ignore[return-value]  # a RowProblem
                    value = cut
                parts.append(prefix + encode_basestring(value))
                mask |= bit
        for i, step, bit in self._steps:
            value = values[i].strip()
            if value:
                member = step(value, email)
                if type(member) is str:
                    parts.append(member)
                    mask |= bit
                elif member is not None:
                    return member  # type: ignore[return-value]  # a RowProblem
        if self._customs:
            custom = []
            for i, key, limit, convert, bit in self._customs:
                value = values[i].strip()
                if value:
                    if len(value) > limit:
                        cut = self._over_limit(i, value, limit)
                        if type(cut) is not str:
                            return cut  # type: ignore[return-value]  # a RowProblem
                        value = cut
                    mask |= bit
                    if convert is None:
                        custom.append(key + encode_basestring(value))
                        continue
                    member = convert(value)
                    if type(member) is not str:
                        return member  # type: ignore[return-value]  # a RowProblem
                    custom.append(key + member)
            if custom:
                parts.append('"custom_fields":{' + ",".join(custom) + "}")
        return email, ",".join(parts) + "}", mask

    def _over_limit(self, i: int, value: str, limit: int) -> str | RowProblem:
        """Reject a field over our own cap (not a profile value); truncate one over SendGrid's
        limit (a warning)."""
        name = self._names[i]
        if len(value) > FIELD_CAP:
            return RowProblem("field_too_large", f"{name} holds more than {FIELD_CAP:,} characters")
        self.warnings[name + "_truncated"] += 1
        return truncate(value, limit)


def _convert(spec: FieldSpec, field_type: FieldType) -> Convert:
    """The check and conversion for a Number or Date custom field. Messages name the field and
    the accepted forms, never the value (reports and logs must not copy profile data)."""
    if field_type == "Number":
        not_a_number = RowProblem(
            "custom_field_not_a_number",
            f"{spec.name} is not a number: use digits with an optional . and exponent "
            "(1234.5, -3, 1e6), no thousands separators or currency signs",
        )

        def number(value: str) -> str | RowProblem:
            text = number_value(value)
            return not_a_number if text is None else text

        return number
    not_a_date = RowProblem(
        "custom_field_not_a_date",
        f"{spec.name} is not a date: use YYYY-MM-DD (an ISO 8601 date or date-time) or MM/DD/YYYY",
    )
    # Dates repeat (a segment's customers share a few thousand days): remember the answers, up
    # to a bound, so memory stays flat when every value differs (date-times).
    seen: dict[str, str | RowProblem] = {}

    def date_(value: str) -> str | RowProblem:
        known = seen.get(value)
        if known is not None:
            return known
        text = date_value(value)
        answer = not_a_date if text is None else '"' + text + '"'
        if len(seen) < _DATE_CACHE:
            seen[value] = answer
        return answer

    return date_
