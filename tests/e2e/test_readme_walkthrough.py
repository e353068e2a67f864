"""The README's "Running it locally" path, run verbatim: the shell blocks between the markers
`<!-- walkthrough: start -->` and `<!-- walkthrough: end -->` are read from README.md and run
in order, as a new user would type them, in a copy of the repository (its files as a fresh clone
has them; `.venv` and `node_modules` linked, so nothing is installed again).

`exporter up` is the one command that runs until stopped: it is started in the background (as
"leave it running" says) and the rest waits for its ready line. `RUN_ID` is what `runs list`
shows. Every command must exit 0, and the list in the sandbox must end holding exactly the
segment's valid contacts. `up` uses the fixed local ports (10000-10002, 3030, 7071): no other
test does.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from exporter.adapters.sendgrid import SendGridClient
from exporter.adapters.settings import SendGridSettings
from exporter.core.samples import generate

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
START = "<!-- walkthrough: start -->"
END = "<!-- walkthrough: end -->"
LOCAL_PORTS = (10000, 10001, 10002, 3030, 7071)


def walkthrough(readme: str) -> list[list[str]]:
    """The commands of the README's walkthrough, in order, each as its argv."""
    assert readme.count(START) == 1 and readme.count(END) == 1, "walkthrough markers"
    text = readme[readme.index(START) : readme.index(END)]
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)
    assert blocks, "no ```sh block between the walkthrough markers"
    commands: list[list[str]] = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                commands.append(argv)
    return commands


def test_the_walkthrough_is_read_as_commands() -> None:
    commands = walkthrough((REPO / "README.md").read_text(encoding="utf-8"))
    assert commands[0] == ["make", "install"]
    assert [".venv/bin/python", "-m", "exporter", "up"] in commands
    add = next(c for c in commands if c[3:5] == ["destinations", "add"])
    assert add[add.index("--display-name") + 1] == "Marketing newsletter"
    assert commands[-1][-2:] == ["show", "RUN_ID"]


def _repo_copy(target: Path) -> Path:
    """The repository's files as a clone has them (tracked, plus new files not yet committed
    that git does not ignore), with `.venv` and `node_modules` linked."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if not source.is_file():
            continue  # deleted in the work tree, not committed yet
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name)  # mtimes kept: `make install` finds it installed
    for linked in (".venv", "node_modules"):
        (target / linked).symlink_to(REPO / linked, target_is_directory=True)
    return target


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _clean_env() -> dict[str, str]:
    """The user's environment, without app settings that would win over local.settings.json."""
    example = json.loads((REPO / "local.settings.example.json").read_text())["Values"]
    drop = {*example, "AzureWebJobsStorage__accountName", "LOCAL_FUNCTION_KEY"}
    return {k: v for k, v in os.environ.items() if k not in drop}


class Up:
    """`exporter up` in the background, stopped by its PID (SIGTERM, as Ctrl-C)."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.log_path = cwd / "up.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "local stack is up" in self.log():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"`exporter up` did not come up:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture
def clone(tmp_path: Path) -> Iterator[Path]:
    busy = [p for p in LOCAL_PORTS if not _port_free(p)]
    if busy:
        pytest.fail(f"the local ports {busy} are taken (is `exporter up` running?): stop it")
    yield _repo_copy(tmp_path / "exporter")


def test_the_readme_s_local_path_works_verbatim(clone: Path) -> None:
    env = _clean_env()
    commands = walkthrough((REPO / "README.md").read_text(encoding="utf-8"))
    up: Up | None = None
    outputs: dict[str, str] = {}
    try:
        for command in commands:
            if command[-1] == "up":
                up = Up(command, clone, env)
                up.wait_ready()
                continue
            argv = command
            if "RUN_ID" in command:
                listed = _run(clone, env, [*command[:4], "list", "--json"])
                (run,) = json.loads(listed)["runs"]
                argv = [run["run_id"] if a == "RUN_ID" else a for a in command]
            outputs[" ".join(argv[3:5])] = _run(clone, env, argv)
        assert up is not None, "the walkthrough never starts `exporter up`"

        assert "FAIL" not in outputs["destinations test"]
        assert "sample contact" in outputs["check segment.csv"]
        assert "succeeded" in outputs["export segment.csv"]
        assert "RUN" in outputs["runs list"].splitlines()[0].upper()  # column headers
        details = json.loads(_run(clone, env, [*commands[-1][:4], "show", run["run_id"], "--json"]))
        assert details["state"] == "succeeded"

        # The list is the truth: the sandbox's list holds exactly the valid contacts.
        planted = generate(clone / "expected.csv", rows=2000, seed=0)  # the samples' defaults
        assert (clone / "expected.csv").read_bytes() == (clone / "segment.csv").read_bytes()
        settings = json.loads((clone / "local.settings.json").read_text())["Values"]
        client = SendGridClient(
            settings["SENDGRID_KEY_MARKETING"],
            SendGridSettings(base_url=settings["SENDGRID_API_BASE_URL"]),
        )
        found = client.find_list("Newsletter")
        assert found is not None
        assert client.list_count(found.id) == planted.valid == details["valid"]
        assert "Traceback" not in up.log()
    finally:
        if up is not None:
            up.stop()
    assert all(_port_free(p) for p in LOCAL_PORTS), "`exporter up` left a port taken"


def _run(cwd: Path, env: dict[str, str], argv: list[str]) -> str:
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, (
        f"`{shlex.join(argv)}` exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    )
    return done.stdout + done.stderr
