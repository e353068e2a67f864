"""SendGrid Marketing Campaigns client: the calls an export makes, with errors a caller can act on.

Built on urllib3 rather than the official `sendgrid` package, whose transport
(`python_http_client` on urllib) does not fit us:
- it re-serialises every body with `json.dumps` (ASCII-escaped), so a body we packed and measured
  at 5.9 MB of UTF-8 could grow past SendGrid's 6 MB limit, and bytes cannot be sent as they are;
- it logs request headers at DEBUG, which include the API key, and response bodies, which
  include email addresses;
- it opens a new connection (TLS handshake) for every request, and timeouts or connection
  errors surface as raw urllib exceptions.

Here (`exporter.adapters.sendgrid_transport`): one pooled keep-alive connection per host, a
timeout on every call, no retries inside the client (queues retry, with the delays SendGrid asks
for), and errors as the types of `exporter.ports.sendgrid`. The API key never appears in an
exception, a repr or a log line.

A list's full membership comes from a contact export (`start_export`, `export_status`, then
`open_export_file` per URL; `exporter.core.list_export` reads the files). Export files live
behind presigned URLs on another host (S3): `exporter.adapters.sendgrid_export_files` fetches
them without the API key, under its URL policy and size cap.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import IO, Any, Final
from urllib.parse import parse_qs, quote, urlsplit

import urllib3

from exporter.adapters import sendgrid_export_files
from exporter.adapters.sendgrid_transport import Transport
from exporter.adapters.settings import SendGridSettings
from exporter.core.batching import ContactStream, upsert_body, upsert_body_stream
from exporter.core.redact import mask_emails
from exporter.ports.sendgrid import (
    REMOVE_CHUNK,
    SEARCH_CHUNK,
    ContactExport,
    ContactList,
    FieldDefinition,
    FieldDefinitions,
    ImportJob,
    NotFound,
    TransientError,
)

LIST_PAGE_SIZE: Final = 1000


class SendGridClient:
    """One API key against one SendGrid base URL. Thread-safe (urllib3's pool is)."""

    def __init__(
        self,
        api_key: str,
        settings: SendGridSettings | None = None,
        *,
        pool: urllib3.PoolManager | None = None,
    ) -> None:
        self._http = Transport(api_key, settings or SendGridSettings(), pool=pool)
        self.settings = self._http.settings

    def __repr__(self) -> str:
        return f"SendGridClient(base_url={self._http.base!r}, api_key=<hidden>)"

    def close(self) -> None:
        """Let go of the keep-alive connections of the pool this client made (a pool passed in
        belongs to the caller and is left alone). Safe to call more than once.

        Calls after close still work, on new connections, rather than fail: a client replaced on
        key rotation may still be sending a batch on another thread. urllib3 drops its host pools
        without closing them under a request in flight; each pool's idle connections are closed
        as soon as no request holds it (at once when none does).
        """
        self._http.close()

    # --- the calls an export makes -----------------------------------------------------------

    def upsert(self, list_ids: Sequence[str], contacts: str | bytes | ContactStream) -> str:
        """Queue an upsert of a JSON array of contacts into `list_ids`; returns the job id.

        A `ContactStream` (a batch blob being read) is sent as it is read, never held whole.
        202 means queued, not imported: follow the job with `import_status`.
        """
        if isinstance(contacts, ContactStream):
            length, chunks = upsert_body_stream(list_ids, contacts)
            answer = self._http.call("PUT", "/v3/marketing/contacts", body=chunks, length=length)
        else:
            body = upsert_body(list_ids, contacts)
            answer = self._http.call("PUT", "/v3/marketing/contacts", body=body)
        return str(_require(answer, "job_id"))

    def import_status(self, job_id: str) -> ImportJob:
        answer = self._http.call("GET", f"/v3/marketing/contacts/imports/{quote(job_id, safe='')}")
        results = answer.get("results") or {}
        return ImportJob(
            id=str(answer.get("id", job_id)),
            status=str(_require(answer, "status")),
            requested=int(results.get("requested_count") or 0),
            created=int(results.get("created_count") or 0),
            updated=int(results.get("updated_count") or 0),
            errored=int(results.get("errored_count") or 0),
            errors_url=results.get("errors_url") or None,
        )

    def field_definitions(self) -> FieldDefinitions:
        answer = self._http.call("GET", "/v3/marketing/field_definitions")
        return FieldDefinitions(
            custom={d.name: d for d in map(_field, answer.get("custom_fields") or [])},
            reserved={d.name: d for d in map(_field, answer.get("reserved_fields") or [])},
        )

    def create_field(self, name: str, field_type: str) -> FieldDefinition:
        answer = self._http.call(
            "POST",
            "/v3/marketing/field_definitions",
            body=_json({"name": name, "field_type": field_type}),
        )
        return _field(answer)

    def get_list(self, list_id: str) -> ContactList:
        return _list(self._http.call("GET", f"/v3/marketing/lists/{quote(list_id, safe='')}"))

    def lists(self) -> Iterator[ContactList]:
        """Every list of the account, page by page."""
        query: dict[str, str] = {"page_size": str(LIST_PAGE_SIZE)}
        while True:
            answer = self._http.call("GET", "/v3/marketing/lists", query=query)
            for item in answer.get("result") or []:
                yield _list(item)
            # Follow only the page token, never the absolute `next` URL: it names a host, and
            # our key must go nowhere but the configured base URL.
            token = _page_token((answer.get("_metadata") or {}).get("next"))
            if not token or token == query.get("page_token"):
                return
            query["page_token"] = token

    def find_list(self, name: str) -> ContactList | None:
        return next((lst for lst in self.lists() if lst.name == name), None)

    def create_list(self, name: str) -> ContactList:
        return _list(self._http.call("POST", "/v3/marketing/lists", body=_json({"name": name})))

    def list_count(self, list_id: str) -> int:
        path = f"/v3/marketing/lists/{quote(list_id, safe='')}/contacts/count"
        return int(_require(self._http.call("GET", path), "contact_count"))

    def search_emails(self, emails: Iterable[str]) -> dict[str, str]:
        """Contact ids of those emails that exist (lower-cased email -> id), 100 per call."""
        found: dict[str, str] = {}
        for chunk in _chunks(emails, SEARCH_CHUNK):
            try:
                answer = self._http.call(
                    "POST", "/v3/marketing/contacts/search/emails", body=_json({"emails": chunk})
                )
            except NotFound:  # SendGrid answers 404 when none of the chunk exists
                continue
            for address, entry in (answer.get("result") or {}).items():
                contact = (entry or {}).get("contact") or {}
                if contact.get("id"):
                    found[str(address).lower()] = str(contact["id"])
        return found

    def remove_from_list(self, list_id: str, contact_ids: Iterable[str]) -> list[str]:
        """Remove contacts from one list (never from the account); returns the job ids."""
        path = f"/v3/marketing/lists/{quote(list_id, safe='')}/contacts"
        jobs = []
        for chunk in _chunks(contact_ids, REMOVE_CHUNK):
            answer = self._http.call("DELETE", path, query={"contact_ids": ",".join(chunk)})
            jobs.append(str(answer.get("job_id") or ""))
        return jobs

    def delete_list(self, list_id: str, *, delete_contacts: bool = False) -> None:
        """Delete a list; with `delete_contacts` also its contacts from the account (which
        counts against the monthly contact allotment when they come back: tests and tooling)."""
        self._http.call(
            "DELETE",
            f"/v3/marketing/lists/{quote(list_id, safe='')}",
            query={"delete_contacts": "true" if delete_contacts else "false"},
        )

    # --- the list's real membership: contact exports ----------------------------------------

    def start_export(self, list_id: str, *, max_file_size_mb: int = 1000) -> str:
        """Start a CSV export of one list's members (no notification email); returns its id.
        Follow it with `export_status`."""
        body = _json(
            {
                "list_ids": [list_id],
                "file_type": "csv",
                "max_file_size": max_file_size_mb,
                "notifications": {"email": False},
            }
        )
        return str(
            _require(self._http.call("POST", "/v3/marketing/contacts/exports", body=body), "id")
        )

    def export_status(self, export_id: str) -> ContactExport:
        answer = self._http.call(
            "GET", f"/v3/marketing/contacts/exports/{quote(export_id, safe='')}"
        )
        urls = answer.get("urls")
        count = answer.get("contact_count")
        return ContactExport(
            id=str(answer.get("id", export_id)),
            status=str(_require(answer, "status")),
            urls=tuple(u for u in urls if isinstance(u, str)) if isinstance(urls, list) else (),
            contact_count=(
                int(count)
                if isinstance(count, int | float) and not isinstance(count, bool)
                else None
            ),
            message=mask_emails(str(answer.get("message") or "")),
        )

    def open_export_file(self, url: str) -> IO[bytes]:
        """Stream one export file (its bytes as sent: gzip) without the API key; the caller
        closes it. What is fetched, and the errors: `sendgrid_export_files.open_export_file`."""
        return sendgrid_export_files.open_export_file(self._http, url)


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _require(answer: Mapping[str, Any], key: str) -> Any:
    if key not in answer:
        raise TransientError(f"SendGrid's answer lacks {key!r}")
    return answer[key]


def _page_token(next_url: object) -> str | None:
    if not isinstance(next_url, str) or not next_url:
        return None
    tokens = parse_qs(urlsplit(next_url).query).get("page_token")
    return tokens[0] if tokens else None


def _field(item: Mapping[str, Any]) -> FieldDefinition:
    return FieldDefinition(
        id=str(item["id"]), name=str(item["name"]), field_type=str(item["field_type"])
    )


def _list(item: Mapping[str, Any]) -> ContactList:
    return ContactList(
        id=str(item["id"]),
        name=str(item.get("name", "")),
        contact_count=int(item.get("contact_count") or 0),
    )


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
