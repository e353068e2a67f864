"""The console's destination pages on the in-memory world (`tests.support.memory_flow`): the
list, the add form through every step (lists, columns, preview, dry run, connection test,
save with the consent recorded as the signed-in identity), edit, export now, remove with the
typed-name confirmation. Each step is the administration's own code; no key is ever shown."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from exporter.admin.preview import PREVIEW_CONTACTS, PREVIEW_MAX_ROWS
from exporter.console.pages.destinations_form import CONSENT_TEXT
from exporter.flow import arrivals
from exporter.model.messages import EXPORT_REQUESTS
from tests.support.cdm import model_json
from tests.support.console import ConsoleClient, text
from tests.support.memory_flow import KEY, SECRET, MemoryWorld, segment_csv

NOW = 1_800_000_000.0
SNAPSHOT = "loyal/2026-11-01.csv"


@pytest.fixture
def world() -> MemoryWorld:
    world = MemoryWorld.create()
    world.drop(SNAPSHOT, segment_csv(30, extra="not-an-email,Bad,X\nuser0@example.com,Dup,Y\n"))
    storage = world.storage

    # What a removal needs of the administration's storage (as tests/functional arms it).
    def delete_app_blobs(prefix: str, *, keep: str = "") -> int:
        gone = [n for n in storage.blobs if n.startswith(prefix) and n != keep]
        for name in gone:
            del storage.blobs[name]
        return len(gone)

    storage.has_app_blobs = lambda prefix: any(n.startswith(prefix) for n in storage.blobs)  # type: ignore[attr-defined]
    storage.delete_app_blobs = delete_app_blobs  # type: ignore[attr-defined]
    return world


@pytest.fixture
def client(world: MemoryWorld) -> ConsoleClient:
    return ConsoleClient.signed_in(
        world.svc, {SECRET: KEY, "SENDGRID_KEY_OTHER": "SG.other", "PATH": "/bin"}, now=NOW
    )


def form(world: MemoryWorld, **changes: str | list[str]) -> dict[str, str | list[str]]:
    values: dict[str, str | list[str]] = {
        "display_name": "Marketing",
        "name": "marketing",
        "api_key_secret": SECRET,
        "list_id": world.list_id,
        "consent": "1",
        "segment": "loyal",
        "map_email": "Email",
        "map_first_name": "FirstName",
        "map_city": "City",
        "sync_mode": "upsert",
        "profile_cap": "1000",
        "removal_guard": "40",
        "full_refresh_every": "5",
        "verify_up_to": "100000",
        "verify_every": "10",
    }
    values.update(changes)
    return values


def live(client: ConsoleClient, step: str, values: dict[str, Any]) -> tuple[int, Any]:
    answer = client.post(f"/destination-form/{step}.json", values)
    assert answer.headers["Content-Type"].startswith("application/json")
    return answer.status, json.loads(answer.body)


# --- the list -------------------------------------------------------------------------------------


def test_no_destinations_yet(client: ConsoleClient) -> None:
    page = client.get("/destinations")
    assert page.status == 200
    assert "No destinations yet" in text(page)
    assert 'href="/api/console/new-destination">Add destination</a>' in page.text


def test_the_list_shows_each_segments_last_run(world: MemoryWorld, client: ConsoleClient) -> None:
    world.destination(segments=["loyal", "vip"])
    (run_id,) = world.arrive(SNAPSHOT, segment_csv(3))
    page = client.get("/destinations")
    assert f'href="/api/console/runs/{run_id}"' in page.text
    assert '<span class="badge badge-pending">queued</span>' in page.text
    assert "no run yet" in text(page)  # vip
    assert KEY not in page.text


# --- the add form ---------------------------------------------------------------------------------


def test_the_new_form_offers_stored_segments_columns_and_key_names(client: ConsoleClient) -> None:
    page = client.get("/new-destination")
    assert page.status == 200
    assert '<option value="loyal" selected>loyal</option>' in page.text
    # The default mapping's choice is pre-selected; the other columns are offered.
    assert '<option value="Email" selected>Email</option>' in page.text
    assert '<option value="City">City</option>' in page.text
    assert '<option value="SENDGRID_KEY_FLOW"></option>' in page.text
    assert '<option value="SENDGRID_KEY_OTHER"></option>' in page.text
    assert "PATH" not in page.text.split("key-names", 1)[1].split("</datalist>", 1)[0]
    assert "SG.other" not in page.text and KEY not in page.text
    assert CONSENT_TEXT in page.text
    # The preview of the first contacts is on the page already.
    assert "user0@example.com" in page.text
    for label in (
        "Display name",
        "Name",
        "API key setting",
        "List",
        "New list name",
        "Segment",
        "Email column",
        "Postal code column",
        "Sync mode",
        "Profile cap",
        "Removal guard",
        "Full refresh every",
    ):
        assert f">{label}</label>" in page.text, label


def test_the_accounts_lists_by_key_name(world: MemoryWorld, client: ConsoleClient) -> None:
    status, body = live(client, "lists", {"api_key_secret": SECRET})
    assert status == 200
    assert body == {"lists": [{"id": world.list_id, "name": "flow test", "contact_count": 0}]}


@pytest.mark.parametrize(
    ("name", "status", "words"),
    [
        ("PATH", 400, "SENDGRID_KEY_<NAME>"),
        ("SG.abc", 400, "not the name of the setting"),
        ("SENDGRID_KEY_NOWHERE", 400, "no SendGrid key is available"),
        ("", 400, "choose the API key setting"),
    ],
)
def test_lists_need_a_key_name_the_rule_allows(
    client: ConsoleClient, name: str, status: int, words: str
) -> None:
    answer_status, body = live(client, "lists", {"api_key_secret": name})
    assert answer_status == status
    assert words in body["error"]


def test_a_key_sendgrid_refuses_is_a_502(world: MemoryWorld, client: ConsoleClient) -> None:
    world.svc.secrets = type(world.svc.secrets)({SECRET: "SG.wrong-key"})
    status, body = live(client, "lists", {"api_key_secret": SECRET})
    assert status == 502
    assert "SG.wrong-key" not in json.dumps(body)


def test_the_columns_of_the_latest_snapshot(world: MemoryWorld, client: ConsoleClient) -> None:
    world.drop("vip/a.csv", "Mail,Given,Tier\na@example.com,A,gold\n")
    status, body = live(client, "columns", {"segment": "vip"})
    assert status == 200
    assert body["columns"] == ["Mail", "Given", "Tier"]
    assert body["suggested"] == {"email": "Mail"}
    assert live(client, "columns", {"segment": "nothing-here"})[0] == 404
    assert live(client, "columns", {"segment": "../x"})[0] == 400


def test_the_preview_shows_the_first_contacts_as_sendgrid_receives_them(
    client: ConsoleClient,
) -> None:
    values = form_values(cf_name="town", cf_type="Text", cf_column="City")
    status, body = live(client, "preview", values)
    assert status == 200
    assert body["snapshot"] == SNAPSHOT
    assert body["fields"] == ["email", "first_name", "city", "town"]
    assert len(body["contacts"]) == PREVIEW_CONTACTS
    assert body["contacts"][0] == {
        "email": "user0@example.com",
        "first_name": "Name0",
        "city": "City0",
        "custom_fields": {"town": "City0"},
    }
    assert body["rows"] <= PREVIEW_CONTACTS + 1


def test_the_preview_reads_the_head_only(world: MemoryWorld, client: ConsoleClient) -> None:
    rows = ["Email"] + ["bad"] * (PREVIEW_MAX_ROWS * 2) + ["late@example.com"]
    world.drop("loyal/2026-11-02.csv", "\n".join(rows) + "\n")
    status, body = live(client, "preview", {"segment": "loyal", "map_email": "Email"})
    assert status == 200
    assert body["contacts"] == []
    assert body["rows"] == PREVIEW_MAX_ROWS
    assert body["rejected"] == {"invalid_email": PREVIEW_MAX_ROWS}


def test_a_mapping_that_does_not_fit_says_why(client: ConsoleClient) -> None:
    status, body = live(client, "preview", {"segment": "loyal", "map_email": "Nope"})
    assert status == 400
    assert "column 'Nope' mapped to email is not in the file" in body["error"]


def test_the_dry_run_reads_the_whole_snapshot(client: ConsoleClient) -> None:
    status, body = live(client, "dry-run", form_values())
    assert status == 200
    assert (body["rows"], body["valid"], body["rejected"], body["duplicates"]) == (32, 30, 1, 1)
    assert body["reasons"] == {"invalid_email": 1}
    (sample,) = body["samples"]["invalid_email"]
    assert sample["row"] == 31
    assert "@example.com" not in sample["message"] or "***@" in sample["message"]


def test_connect_runs_the_connection_test(world: MemoryWorld, client: ConsoleClient) -> None:
    status, body = live(client, "connect", form(world))
    assert status == 200
    assert [(c["name"], c["ok"]) for c in body["checks"]] == [
        ("api_key", True),
        ("list", True),
        ("custom_fields", True),
    ]
    status, body = live(client, "connect", form(world, list_id="", list_name="Brand new"))
    assert (
        body["checks"][1]["detail"] == "no list named 'Brand new' yet: it is created when you save"
    )
    assert list_named(world, "Brand new") is None  # a test creates nothing
    status, body = live(client, "connect", form(world, cf_name="tier", cf_column="City"))
    assert body["ok"] is False
    assert "tier" in body["checks"][2]["detail"]


def list_named(world: MemoryWorld, name: str) -> Any:
    return next((found for found in world.sendgrid.store.lists() if found.name == name), None)


def form_values(**changes: str) -> dict[str, str]:
    values = {"segment": "loyal", "map_email": "Email", "map_first_name": "FirstName"}
    values.update({"map_city": "City"})
    values.update(changes)
    return values


# --- saving ---------------------------------------------------------------------------------------


def test_saving_records_the_consent_of_the_signed_in_identity(
    world: MemoryWorld, client: ConsoleClient
) -> None:
    values = form(world, accepted_by="someone typed this", consent_by="nobody")
    answer = client.post("/new-destination", values)
    assert answer.status == 303, text(answer)
    assert answer.headers["Location"] == "/api/console/destinations/marketing?saved=created"
    saved = world.destinations.get("marketing")
    assert saved is not None
    assert saved.consent is not None
    assert saved.consent.accepted_by == "local administrator (local:function-key)"
    assert saved.consent.accepted_at == datetime.fromtimestamp(NOW, UTC)
    assert saved.mapping["email"] == "Email"
    assert saved.mapping["city"] == "City"
    assert saved.mapping["last_name"] == ""  # chosen "not mapped"
    assert (saved.profile_cap, saved.max_removal_share, saved.full_refresh_every) == (1000, 0.4, 5)
    page = client.get("/destinations/marketing", saved="created")
    assert "Destination created." in text(page)
    assert "agreed by local administrator (local:function-key)" in text(page)
    assert KEY not in page.text


def test_no_consent_no_destination(world: MemoryWorld, client: ConsoleClient) -> None:
    values = form(world, display_name="Kept as typed")
    del values["consent"]
    answer = client.post("/new-destination", values)
    assert answer.status == 400
    assert "I agree" in text(answer)
    assert 'value="Kept as typed"' in answer.text
    assert world.destinations.get("marketing") is None


def test_the_administrations_refusal_comes_back_beside_the_form(
    world: MemoryWorld, client: ConsoleClient
) -> None:
    values = form(world, cf_name="tier", cf_type="Number", cf_column="City")
    answer = client.post("/new-destination", values)
    assert answer.status == 400
    assert "custom field(s) 'tier' do not exist in SendGrid" in text(answer)
    assert 'value="tier"' in answer.text
    assert world.destinations.get("marketing") is None
    values["create_missing_fields"] = "1"
    assert client.post("/new-destination", values).status == 303
    saved = world.destinations.get("marketing")
    assert saved is not None and saved.mapping["custom:tier:Number"] == "City"


def test_a_new_list_is_created_on_save(world: MemoryWorld, client: ConsoleClient) -> None:
    answer = client.post("/new-destination", form(world, list_id="", list_name="Newsletter"))
    assert answer.headers["Location"].endswith("?saved=created&list_created=1")
    created = list_named(world, "Newsletter")
    assert created is not None
    saved = world.destinations.get("marketing")
    assert saved is not None and saved.list_id == created.id


def test_a_name_taken_is_a_conflict(world: MemoryWorld, client: ConsoleClient) -> None:
    world.destination()
    answer = client.post("/new-destination", form(world))
    assert answer.status == 409
    assert "exists already" in text(answer)


@pytest.mark.parametrize(
    ("action", "words"),
    [
        ("load-lists", "flow test (0 contacts)"),
        ("dry-run", "invalid_email"),
        ("connect", "SendGrid accepts the key in"),
        ("load-columns", "Columns of segments/loyal/2026-11-01.csv"),
    ],
)
def test_every_step_works_without_javascript(
    world: MemoryWorld, client: ConsoleClient, action: str, words: str
) -> None:
    answer = client.post("/new-destination", form(world, action=action))
    assert answer.status == 200
    assert words in answer.text
    assert world.destinations.get("marketing") is None


def test_add_custom_field_adds_a_row(world: MemoryWorld, client: ConsoleClient) -> None:
    values = form(world, action="add-field", cf_name="tier", cf_type="Text", cf_column="City")
    page = client.post("/new-destination", values).text
    rows = page.split('id="custom-rows"', 1)[1].split("</template>", 1)[0]
    assert rows.count('name="cf_name"') == 3  # tier, the new row, and the template's


# --- edit -----------------------------------------------------------------------------------------


def test_edit_keeps_the_consent_unless_agreed_again(
    world: MemoryWorld, client: ConsoleClient
) -> None:
    stored = world.destination(mapping={"email": "Email", "custom:tier:Text": "City"})
    page = client.get("/destinations/marketing/edit")
    assert page.status == 200
    assert 'value="Marketing"' in page.text
    assert 'value="tier"' in page.text
    assert "Agreed by dpo@company.example" in page.text
    values = form(world, display_name="Marketing EU", cf_name="tier", cf_column="City")
    values["create_missing_fields"] = "1"
    del values["consent"]
    answer = client.post("/destinations/marketing/edit", values)
    assert answer.status == 303, text(answer)
    saved = world.destinations.get("marketing")
    assert saved is not None
    assert saved.display_name == "Marketing EU"
    assert saved.consent == stored.consent
    assert client.post("/destinations/marketing/edit", values | {"consent": "1"}).status == 303
    again = world.destinations.get("marketing")
    assert again is not None and again.consent is not None
    assert again.consent.accepted_by.startswith("local administrator")


def test_edit_cannot_rename(world: MemoryWorld, client: ConsoleClient) -> None:
    world.destination()
    answer = client.post("/destinations/marketing/edit", form(world, name="renamed"))
    assert answer.status == 303
    assert world.destinations.get("renamed") is None


# --- a destination's page, export now, remove -----------------------------------------------------


def test_the_destination_page_shows_its_document_never_a_key(
    world: MemoryWorld, client: ConsoleClient
) -> None:
    world.destination(notifications=[{"name": "ops", "kind": "slack", "events": ["run_failed"]}])
    page = client.get("/destinations/marketing")
    assert page.status == 200
    assert SECRET in page.text
    assert KEY not in page.text
    assert "ops=slack:run_failed:NOTIFY_URL_OPS" in page.text
    assert ">Export now</button>" in page.text
    assert ">Type the destination's name to confirm</label>" in page.text
    assert client.get("/destinations/nobody").status == 404


def test_export_now_queues_a_run_and_shows_it(world: MemoryWorld, client: ConsoleClient) -> None:
    world.destination()
    answer = client.post("/destinations/marketing/export")
    assert answer.status == 303
    (run,) = world.ledger.runs()
    assert answer.headers["Location"] == f"/api/console/runs/{run.run_id}"
    (request,) = world.queued(EXPORT_REQUESTS)
    assert request.full_refresh is False


def test_a_full_refresh_asks_for_confirmation(world: MemoryWorld, client: ConsoleClient) -> None:
    world.destination(sync_mode="mirror")
    page = client.post("/destinations/marketing/export", {"full_refresh": "1"})
    assert page.status == 200
    assert "Confirm the export" in page.text
    assert world.ledger.runs() == []
    confirmed = client.post(
        "/destinations/marketing/export",
        {"full_refresh": "1", "allow_mass_removal": "1", "confirmed": "1"},
    )
    assert confirmed.status == 303
    (request,) = world.queued(EXPORT_REQUESTS)
    assert request.full_refresh is True
    assert request.allow_mass_removal is True


def test_export_without_consent_is_refused(world: MemoryWorld, client: ConsoleClient) -> None:
    world.destination(consent=None)
    answer = client.post("/destinations/marketing/export")
    assert answer.status == 409
    assert "no data-privacy consent" in text(answer)


def test_remove_needs_the_name_typed(world: MemoryWorld, client: ConsoleClient) -> None:
    world.destination()
    answer = client.post("/destinations/marketing/remove", {"confirm_name": "Marketing"})
    assert answer.status == 400
    assert "type the destination's name, marketing, exactly" in text(answer)
    assert world.destinations.get("marketing") is not None


def test_remove_stops_runs_and_says_what_was_deleted(
    world: MemoryWorld, client: ConsoleClient
) -> None:
    world.destination()
    (run_id,) = world.arrive(SNAPSHOT, segment_csv(5))
    answer = client.post("/destinations/marketing/remove", {"confirm_name": "marketing"})
    assert answer.status == 200
    assert world.destinations.get("marketing") is None
    assert world.run(run_id).state == "failed"
    page = text(answer)
    assert "Destination marketing removed" in page
    assert "Unfinished runs stopped 1" in page
    assert run_id in page
    # A repeat finishes nothing new and says the document was gone.
    again = client.post("/destinations/marketing/remove", {"confirm_name": "marketing"})
    assert "its document was gone already" in text(again)


def test_a_cdm_entitys_attributes_are_its_columns(
    world: MemoryWorld, client: ConsoleClient
) -> None:
    world.destination(segments=["HighValue"])
    partition = "ci/BlobExport/HighValue/2026/11/24/1433/HighValue_1.csv"
    world.drop(partition, "c1,user1@example.com,Ada\n")
    manifest = world.drop(
        "ci/BlobExport/model.json",
        model_json(
            {"HighValue": [partition]},
            attributes=("Id", "Email", "FirstName"),
            base="http://127.0.0.1:10000/devstoreaccount1/segments",
        ),
    )
    arrivals.on_snapshot(world.svc, manifest)
    assert (
        '<option value="HighValue" selected>HighValue</option>'
        in client.get("/new-destination").text
    )
    status, body = live(client, "columns", {"segment": "HighValue"})
    assert status == 200
    assert body["columns"] == ["Id", "Email", "FirstName"]
    assert body["suggested"] == {"email": "Email", "first_name": "FirstName"}
    values = {"segment": "HighValue", "map_email": "Email", "map_first_name": "FirstName"}
    status, body = live(client, "preview", values)
    assert body["contacts"] == [{"email": "user1@example.com", "first_name": "Ada"}]
