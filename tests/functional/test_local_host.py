"""The local Functions host on real Azurite, driving the toy app in `toy_app/`.

Each toy function records what it saw as a JSON blob; the tests read those records back. Every
test gets its own queue and container names (the session's Azurite is shared) and starts its
own host, which the `toy` fixture stops even when the test fails.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient
from azure.storage.queue import QueueClient

from exporter.local.azurite import AzuriteProcess
from exporter.local.host.blobs import BLOB_POISON_QUEUE, RECEIPTS_CONTAINER
from exporter.local.host.config import HostConfig, HostError
from exporter.local.host.http import Route
from exporter.local.host.runtime import LocalHost
from tests.support.azurite import REPO, eventually, queue_client, unique_name

pytestmark = pytest.mark.functional

TOY_APP = Path(__file__).parent / "toy_app"
FUNCTION_KEY = "toy-function-key"
NAMES = {
    "TOY_RESULTS": "results",
    "TOY_DECODE_QUEUE": "decode",
    "TOY_FLAKY_QUEUE": "flaky",
    "TOY_FAIL_QUEUE": "fail",
    "TOY_SLOW_QUEUE": "slow",
    "TOY_OUTPUT_QUEUE": "output",
    "TOY_VERSIONS_CONTAINER": "versions",
    "TOY_POISON_CONTAINER": "poison",
    "TOY_SDK_CONTAINER": "sdk",
}


@dataclass
class Toy:
    """One test's toy app: its settings, its hosts, and what its functions recorded."""

    azurite: AzuriteProcess
    tmp_path: Path
    settings: dict[str, str]
    hosts: list[LocalHost] = field(default_factory=list)

    @property
    def settings_file(self) -> Path:
        path = self.tmp_path / "local.settings.json"
        path.write_text(json.dumps({"IsEncrypted": False, "Values": self.settings}))
        return path

    @functools.cached_property
    def blobs(self) -> BlobServiceClient:
        return BlobServiceClient.from_connection_string(self.azurite.connection_string)

    def start_host(self, host_json: Path | None = None, **options: Any) -> LocalHost:
        host = LocalHost(
            TOY_APP,
            self.settings_file,
            host_json,
            http_port=0,
            blob_poll_interval=0.2,
            **options,
        )
        self.hosts.append(host)
        host.start()
        return host

    def queue(self, setting: str, *, base64: bool = True) -> QueueClient:
        return queue_client(self.azurite.connection_string, self.settings[setting], base64=base64)

    def poison(self, setting: str) -> QueueClient:
        """The `<queue>-poison` queue, read raw: messages are copied there as received."""
        name = self.settings[setting] + "-poison"
        return queue_client(self.azurite.connection_string, name, base64=False)

    def container(self, setting: str) -> ContainerClient:
        container = self.blobs.get_container_client(self.settings[setting])
        if not container.exists():
            container.create_container()
        return container

    def records(self, function: str) -> list[dict[str, Any]]:
        results = self.blobs.get_container_client(self.settings["TOY_RESULTS"])
        return [
            json.loads(results.download_blob(blob.name).readall())
            for blob in results.list_blobs(name_starts_with=f"{function}/")
        ]

    def wait_records(self, function: str, count: int, timeout: float = 10.0) -> list[Any]:
        return eventually(
            lambda: found if len(found := self.records(function)) >= count else None, timeout
        )


@pytest.fixture
def toy(azurite: AzuriteProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Toy]:
    if not azurite.alive():
        pytest.fail(f"Azurite has exited:\n{azurite.stderr_tail()}")
    settings = {name: unique_name(prefix) for name, prefix in NAMES.items()}
    settings |= {
        "AzureWebJobsStorage": azurite.connection_string,
        "TOY_TIMER_SCHEDULE": "0 0 0 1 1 *",  # once a year: only the timer test needs it
        "LOCAL_FUNCTION_KEY": FUNCTION_KEY,
    }
    for name in settings:  # the file's values must apply, not a developer's shell
        monkeypatch.delenv(name, raising=False)
    toy = Toy(azurite, tmp_path, settings)
    toy.blobs.create_container(settings["TOY_RESULTS"])
    try:
        yield toy
    finally:
        for host in toy.hosts:
            host.stop(timeout=10)


def message_count(client: QueueClient) -> int:
    return int(client.get_queue_properties().approximate_message_count or 0)


def peek_all(client: QueueClient) -> list[str]:
    try:
        return [str(m.content) for m in client.peek_messages(max_messages=32)]
    except Exception:  # the queue does not exist yet
        return []


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


# -- queue triggers ---------------------------------------------------------------------------


def test_base64_message_is_decoded_and_deleted_after_success(toy, monkeypatch):
    # The environment wins over local.settings.json.
    env_queue = unique_name("decode-env")
    monkeypatch.setenv("TOY_DECODE_QUEUE", env_queue)
    toy.start_host()
    sent = queue_client(toy.azurite.connection_string, env_queue).send_message("héllo ✓")

    (seen,) = toy.wait_records("decode", 1)
    assert seen == {
        "body": "héllo ✓",
        "id": sent.id,
        "dequeue_count": 1,
        "has_pop_receipt": True,
        "has_times": True,
        "function_name": "decode",
        "invocation_id": seen["invocation_id"],
    }
    client = queue_client(toy.azurite.connection_string, env_queue)
    eventually(lambda: message_count(client) == 0)


def test_message_that_is_not_base64_is_poisoned_without_calling_the_function(toy):
    raw = toy.queue("TOY_FLAKY_QUEUE", base64=False)
    raw.create_queue()
    raw.send_message("not base64 at all!")
    toy.start_host()
    poisoned = eventually(lambda: peek_all(toy.poison("TOY_FLAKY_QUEUE")))
    assert poisoned == ["not base64 at all!"]
    assert toy.records("flaky") == []


def test_failing_twice_then_succeeding_succeeds_on_the_third_dequeue(toy):
    toy.start_host()
    toy.queue("TOY_FLAKY_QUEUE").send_message("flaky")

    seen = toy.wait_records("flaky", 3)
    assert sorted(r["dequeue_count"] for r in seen) == [1, 2, 3]
    eventually(lambda: message_count(toy.queue("TOY_FLAKY_QUEUE")) == 0)
    time.sleep(0.5)
    assert len(toy.records("flaky")) == 3
    assert peek_all(toy.poison("TOY_FLAKY_QUEUE")) == []


def test_always_failing_message_lands_in_poison_queue_with_its_body(toy):
    toy.start_host()
    toy.queue("TOY_FAIL_QUEUE").send_message('{"run": "r-1"}')

    poisoned = eventually(lambda: peek_all(toy.poison("TOY_FAIL_QUEUE")))
    assert [base64.b64decode(p).decode() for p in poisoned] == ['{"run": "r-1"}']
    # maxDequeueCount is 3 in the toy host.json.
    assert sorted(r["dequeue_count"] for r in toy.records("always_fails")) == [1, 2, 3]
    assert message_count(toy.queue("TOY_FAIL_QUEUE")) == 0


@pytest.mark.parametrize(
    ("batch_size", "threshold"),
    [(3, 0), (2, 1)],
    ids=["batch3-threshold0", "batch2-threshold1"],
)
def test_batch_size_and_new_batch_threshold_bound_concurrency(toy, tmp_path, batch_size, threshold):
    host_json = tmp_path / "host.json"
    config = json.loads((TOY_APP / "host.json").read_text())
    config["extensions"]["queues"] |= {"batchSize": batch_size, "newBatchThreshold": threshold}
    host_json.write_text(json.dumps(config))
    slow = toy.queue("TOY_SLOW_QUEUE")
    slow.create_queue()
    for number in range(9):
        slow.send_message(f"m{number}")
    toy.start_host(host_json)

    seen = toy.wait_records("slow", 9, timeout=15)
    assert sorted(r["body"] for r in seen) == [f"m{n}" for n in range(9)]
    peak = max_overlap([(r["started"], r["finished"]) for r in seen])
    # Azure fetches another batch once no more than newBatchThreshold messages are in flight.
    assert 2 <= peak <= batch_size + threshold


def test_lease_is_renewed_while_a_long_invocation_runs(toy, tmp_path):
    host_json = tmp_path / "host.json"
    config = json.loads((TOY_APP / "host.json").read_text())
    config["extensions"]["queues"]["newBatchThreshold"] = 2  # keeps polling meanwhile
    host_json.write_text(json.dumps(config))
    toy.start_host(host_json, queue_lease=2.0)  # renewed every second; would expire after 2
    toy.queue("TOY_SLOW_QUEUE").send_message("3")

    (seen,) = toy.wait_records("slow", 1, timeout=10)
    assert seen["finished"] - seen["started"] >= 3
    # Without renewal the message would have been delivered again after 2 s.
    assert len(toy.records("slow_started")) == 1
    eventually(lambda: message_count(toy.queue("TOY_SLOW_QUEUE")) == 0)


def test_function_timeout_fails_the_invocation_and_the_message_is_retried(toy, tmp_path):
    host_json = tmp_path / "host.json"
    config = json.loads((TOY_APP / "host.json").read_text())
    config["functionTimeout"] = "00:00:00.5"
    host_json.write_text(json.dumps(config))
    toy.start_host(host_json)
    toy.queue("TOY_SLOW_QUEUE").send_message("1")

    poisoned = eventually(lambda: peek_all(toy.poison("TOY_SLOW_QUEUE")), timeout=10)
    assert [base64.b64decode(p).decode() for p in poisoned] == ["1"]


# -- blob triggers ----------------------------------------------------------------------------


def test_blob_version_is_processed_once_and_a_restart_keeps_the_receipts(toy):
    container = toy.container("TOY_VERSIONS_CONTAINER")
    name = container.container_name
    toy.start_host()
    container.upload_blob("in/2024/a.csv", b"v1")
    container.upload_blob("elsewhere/b.csv", b"not matched by in/{name}")

    (first,) = toy.wait_records("versions", 1)
    assert first["name"] == f"{name}/in/2024/a.csv"
    assert first["length"] == 2
    assert first["content"] == "v1"
    assert first["uri"].endswith(f"/{name}/in/2024/a.csv")
    time.sleep(1.0)  # five scans later: still once
    assert len(toy.records("versions")) == 1

    container.upload_blob("in/2024/a.csv", b"v2", overwrite=True)
    seen = toy.wait_records("versions", 2)
    assert sorted(r["content"] for r in seen) == ["v1", "v2"]

    toy.hosts[-1].stop()
    toy.start_host()
    time.sleep(1.0)
    assert len(toy.records("versions")) == 2

    receipts = toy.blobs.get_container_client(RECEIPTS_CONTAINER)
    prefix = "blobreceipts/local-host/Host.Functions.versions/"
    mine = [b.name for b in receipts.list_blobs(name_starts_with=prefix) if f"/{name}/" in b.name]
    etag = container.get_blob_client("in/2024/a.csv").get_blob_properties().etag
    assert len(mine) == 2
    assert f"{prefix}{etag}/{name}/in/2024/a.csv" in mine


def test_always_failing_blob_goes_to_the_blob_poison_queue(toy):
    container = toy.container("TOY_POISON_CONTAINER")
    name = container.container_name
    toy.start_host()
    etag = container.upload_blob("bad.csv", b"x").get_blob_properties().etag
    poison = queue_client(toy.azurite.connection_string, BLOB_POISON_QUEUE)

    def mine() -> list[dict[str, Any]]:
        messages = [json.loads(m) for m in peek_all(poison)]
        return [m for m in messages if m["ContainerName"] == name]

    (message,) = eventually(mine)
    assert message == {
        "Type": "BlobTrigger",
        "FunctionId": "Host.Functions.blob_fails",
        "BlobType": "BlockBlob",
        "ContainerName": name,
        "BlobName": "bad.csv",
        "ETag": etag,
    }
    assert len(toy.records("blob_fails")) == 3
    time.sleep(0.6)  # the receipt stops further attempts
    assert len(toy.records("blob_fails")) == 3


def test_blob_client_annotation_gets_a_storage_blob_client_that_streams(toy):
    container = toy.container("TOY_SDK_CONTAINER")
    content = os.urandom(3 * 1024 * 1024 + 17)  # several download chunks
    toy.start_host()
    container.upload_blob("segment-a/snapshot.csv", content)

    (seen,) = toy.wait_records("sdk_client", 1)
    assert seen == {
        "type": "azure.storage.blob._blob_client.BlobClient",
        "blob_name": "segment-a/snapshot.csv",
        "sha256": hashlib.sha256(content).hexdigest(),
        "size": len(content),
    }


# -- timer and HTTP triggers ------------------------------------------------------------------


def test_timer_with_a_one_second_schedule_fires(toy):
    toy.settings["TOY_TIMER_SCHEDULE"] = "* * * * * *"
    toy.start_host()
    seen = toy.wait_records("tick", 2, timeout=5)
    assert not any(r["past_due"] for r in seen)


def test_a_disabled_timer_does_not_fire_until_switched_on_without_a_restart(toy):
    toy.settings["TOY_TIMER_SCHEDULE"] = "* * * * * *"
    toy.settings["AzureWebJobs.tick.Disabled"] = "true"
    host = toy.start_host(settings_poll_interval=0.1)
    assert host.disabled("tick") and not host.disabled("decode")

    time.sleep(2.5)  # two occurrences at least, none run
    assert toy.records("tick") == []

    toy.settings["AzureWebJobs.tick.Disabled"] = "false"
    assert toy.settings_file.is_file()  # written again: the host follows it
    toy.wait_records("tick", 1, timeout=5)
    assert not host.disabled("tick")


def request(
    url: str, *, method: str = "GET", headers: dict[str, str] | None = None, body: bytes = b""
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body or None, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_http_trigger_keys_routes_and_outputs(toy):
    host = toy.start_host()
    base = f"{host.http_url}/api"
    key = {"x-functions-key": FUNCTION_KEY}

    status, body = request(f"{base}/echo/bob")
    assert status == 401
    assert json.loads(body)["error"].startswith("this function needs a function key: send")
    status, body = request(f"{base}/echo/bob", headers={"x-functions-key": "wrong"})
    assert status == 401
    assert "the function key is not valid" in json.loads(body)["error"]
    assert FUNCTION_KEY not in body.decode()
    status, body = request(f"{base}/echo/bob", headers=key)
    assert status == 200
    assert json.loads(body)["route_params"] == {"name": "bob"}
    status, body = request(f"{base}/echo/bob/7?code={FUNCTION_KEY}&x=1")
    assert status == 200
    assert json.loads(body) == {
        "method": "GET",
        "route_params": {"name": "bob", "count": "7"},
        "params": {"code": FUNCTION_KEY, "x": "1"},
        "body": "",
    }
    status, body = request(f"{base}/echo/ann", method="POST", headers=key, body=b"hi")
    assert (status, json.loads(body)["body"]) == (200, "hi")

    assert request(f"{base}/echo/bob/seven", headers=key)[0] == 404  # {count:int?}
    assert request(f"{base}/echo/bob", method="DELETE", headers=key)[0] == 404
    assert request(f"{base}/nothing", headers=key)[0] == 404
    assert request(f"{host.http_url}/echo/bob", headers=key)[0] == 404  # no route prefix
    assert request(f"{base}/broken")[0] == 500

    # Anonymous, async, with a queue output binding sent after success.
    assert request(f"{base}/enqueue", method="POST", body=b"to the queue") == (202, b"queued")
    messages = eventually(lambda: peek_all(toy.queue("TOY_OUTPUT_QUEUE")))
    assert messages == ["to the queue"]


def test_a_disabled_http_function_answers_404(toy):
    toy.settings["AzureWebJobs.echo.Disabled"] = "1"
    host = toy.start_host()
    key = {"x-functions-key": FUNCTION_KEY}

    assert request(f"{host.http_url}/api/echo/bob", headers=key)[0] == 404
    assert request(f"{host.http_url}/api/enqueue", method="POST", body=b"x")[0] == 202


def test_route_templates():
    where = "test"
    assert Route.parse("a/{b}/{c:int?}", where).match("/a/x") == {"b": "x"}
    assert Route.parse("a/{b}/{c:int?}", where).match("/a/x/5") == {"b": "x", "c": "5"}
    assert Route.parse("files/{*path}", where).match("/files/x/y.csv") == {"path": "x/y.csv"}
    assert Route.parse("Runs/{id:guid}", where).match(
        "/runs/3f1c2a9e-0b7d-4c55-9a4e-1d2b3c4d5e6f"
    ) == {"id": "3f1c2a9e-0b7d-4c55-9a4e-1d2b3c4d5e6f"}
    assert Route.parse("runs/{id:guid}", where).match("/runs/nope") is None
    with pytest.raises(HostError, match=r"route parameter \{b:regex\(x\)\} is not supported"):
        Route.parse("a/{b:regex(x)}", where)
    with pytest.raises(HostError, match=r"route parameter \{b:datetime\} is not supported"):
        Route.parse("a/{b:datetime}", where)
    with pytest.raises(HostError, match="optional"):
        Route.parse("a/{b?}/c", where)


def test_host_json_defaults_and_time_spans(tmp_path):
    assert HostConfig.load(None) == HostConfig()
    path = tmp_path / "host.json"
    path.write_text(
        json.dumps(
            {
                "functionTimeout": "-1",
                "extensions": {
                    "queues": {"batchSize": 8, "visibilityTimeout": "00:01:30.5"},
                    "http": {"routePrefix": ""},
                    "blobs": {"maxDegreeOfParallelism": 2},
                },
            }
        )
    )
    config = HostConfig.load(path)
    assert (config.batch_size, config.new_batch_threshold) == (8, 4)
    assert config.visibility_timeout == 90.5
    assert config.function_timeout is None
    assert config.route_prefix == ""
    assert config.blob_parallelism == 2
    path.write_text(json.dumps({"extensions": {"queues": {"batchSize": 64}}}))
    with pytest.raises(HostError, match="batchSize"):
        HostConfig.load(path)


# -- startup errors and lifecycle -------------------------------------------------------------


def test_startup_errors_name_the_setting_function_and_binding(toy, tmp_path):
    del toy.settings["TOY_SLOW_QUEUE"]
    with pytest.raises(HostError, match=r"function slow.*'TOY_SLOW_QUEUE'"):
        toy.start_host()
    assert "TOY_RESULTS" not in os.environ  # what the failed start exported is withdrawn
    assert "function_app" not in sys.modules

    toy.settings["TOY_SLOW_QUEUE"] = unique_name("slow")
    connection = toy.settings.pop("AzureWebJobsStorage")
    toy.settings["AzureWebJobsStorage__accountName"] = "devstoreaccount1"
    with pytest.raises(HostError, match="identity-based"):
        toy.start_host()
    toy.settings["AzureWebJobsStorage"] = connection

    app_dir = tmp_path / "unsupported"
    app_dir.mkdir()
    (app_dir / "function_app.py").write_text(
        "import azure.functions as func\n"
        "app = func.FunctionApp()\n"
        "S = 'AzureWebJobsStorage'\n"
        "@app.queue_trigger(arg_name='msg', queue_name='in-queue', connection=S)\n"
        "@app.blob_input(arg_name='data', path='c/x.csv', connection=S)\n"
        "def reader(msg, data):\n"
        "    pass\n"
    )
    with pytest.raises(HostError, match=r"function reader, binding 'data' \(blob\)"):
        LocalHost(app_dir, toy.settings_file, http_port=0).start()


def child_pids() -> set[int]:
    """Processes whose parent is this one (Linux /proc)."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it exited meanwhile
        if int(fields[1]) == os.getpid():
            children.add(int(stat.parent.name))
    return children


def test_host_stops_cleanly(toy):
    before = set(threading.enumerate())
    children_before = child_pids()
    host = toy.start_host()
    port = host.http_port
    assert port is not None
    assert {f.trigger for f in host.functions} == {
        "queueTrigger",
        "blobTrigger",
        "timerTrigger",
        "httpTrigger",
    }
    assert os.environ["TOY_RESULTS"] == toy.settings["TOY_RESULTS"]
    slow = toy.queue("TOY_SLOW_QUEUE")
    slow.send_message("in flight at stop")
    eventually(lambda: not peek_all(slow), timeout=5)  # received: invisible, running

    host.stop()
    # The invocation in flight finished and its message was deleted, not abandoned.
    assert [r["body"] for r in toy.records("slow")] == ["in flight at stop"]
    assert message_count(slow) == 0
    leftover = eventually(lambda: set(threading.enumerate()) <= before or None, timeout=3)
    assert leftover
    assert not [t.name for t in threading.enumerate() if t.name.startswith("local-host")]
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    assert "TOY_RESULTS" not in os.environ
    assert "function_app" not in sys.modules
    assert child_pids() <= children_before  # the host starts no processes
    host.stop()  # idempotent


def test_cli_prints_one_started_line_and_stops_on_sigterm(toy):
    command = [
        sys.executable,
        "-m",
        "exporter.local.host",
        "--app-dir",
        str(TOY_APP),
        "--settings",
        str(toy.settings_file),
        "--http-port",
        "0",
    ]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    errors: list[str] = []
    assert process.stdout is not None and process.stderr is not None
    readers = [
        threading.Thread(target=lambda: [lines.put(line) for line in process.stdout]),
        threading.Thread(target=lambda: errors.extend(process.stderr)),
    ]
    for reader in readers:
        reader.start()
    try:
        started = lines.get(timeout=30)
        assert started.startswith("host started: 11 functions (decode: queueTrigger, ")
        assert "echo: httpTrigger" in started
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        for reader in readers:
            reader.join(timeout=5)
        rest = []
        while not lines.empty():
            rest.append(lines.get())
        assert rest == ["host stopped\n"]
        log = "".join(errors)
        assert "host started" in log  # the log line, on stderr
        assert FUNCTION_KEY not in log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        for reader in readers:
            reader.join(timeout=5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
