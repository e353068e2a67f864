"""The client's pure pieces: reading rate-limit headers, errors, page tokens, redaction."""

import email.utils
import time

from exporter.adapters.sendgrid import SendGridClient, _page_token
from exporter.adapters.sendgrid_transport import (
    RateLimit,
    _errors,
    _rate_limit,
    _retry_after,
    _template,
)
from exporter.core.redact import mask_emails


def test_retry_after_prefers_retry_after_seconds():
    assert _retry_after({"Retry-After": "7"}, RateLimit(reset_at=time.time() + 100)) == 7


def test_retry_after_reads_the_reset_against_the_servers_clock():
    server_now = time.time() - 3600  # SendGrid's clock an hour behind ours
    headers = {"Date": email.utils.formatdate(server_now, usegmt=True)}
    assert 9 <= _retry_after(headers, RateLimit(reset_at=server_now + 10)) <= 11


def test_retry_after_is_at_least_a_second():
    assert _retry_after({}, RateLimit(reset_at=time.time() - 50)) == 1.0
    assert _retry_after({}, RateLimit()) == 1.0


def test_rate_limit_headers():
    limit = _rate_limit(
        {
            "X-RateLimit-Limit": "600",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": "1700000000",
        }
    )
    assert limit == RateLimit(600, 0, 1700000000.0)
    assert _rate_limit({"X-RateLimit-Remaining": "soon"}) == RateLimit()


def test_errors_are_parsed_and_masked():
    body = b'{"errors":[{"field":"contacts[0].email","message":"jane@example.com is invalid"}]}'
    (error,) = _errors(body)
    assert error.field == "contacts[0].email"
    assert error.message == "***@example.com is invalid"
    assert _errors(b"<html>bad gateway</html>")[0].message == "<html>bad gateway</html>"
    assert _errors(b"") == []


def test_page_token_comes_only_from_the_query():
    url = "https://evil.example/v3/marketing/lists?page_size=100&page_token=abc%3D"
    assert _page_token(url) == "abc="
    assert _page_token(None) is None


def test_templates_hide_ids():
    assert _template("/v3/marketing/lists/1b2c/contacts") == "/v3/marketing/lists/{id}/contacts"
    assert _template("/v3/marketing/contacts/imports/9") == "/v3/marketing/contacts/imports/{id}"


def test_repr_hides_the_key():
    assert "SG.secret" not in repr(SendGridClient("SG.secret"))


def test_mask_emails_everywhere_in_a_text():
    assert (
        mask_emails("a.b+c@x.io, 'd@y.org' and <e@z.co>") == "***@x.io, '***@y.org' and <***@z.co>"
    )
    assert mask_emails("no address @ all") == "no address @ all"
