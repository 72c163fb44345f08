"""Real servers for the deployment tests: a throwaway PostgreSQL, dagster-webserver, daemon.

Everything listens on 127.0.0.1 on free ports, lives in a temp dir and is stopped (process
groups killed) by the fixtures' finalizers, pass or fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A port that was free a moment ago. Another process may take it before our server binds
    it (the bind-close-reuse race): start servers through `on_free_port`, which retries."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GraphQLHTTPError(AssertionError):
    """The webserver answered a GraphQL request with an HTTP error; the body says why."""

    def __init__(self, code: int, body: str) -> None:
        super().__init__(f"HTTP {code} from the webserver: {body[-2000:]}")
        self.code, self.body = code, body


class PortTaken(Exception):
    """The server could not bind its port: another process took it first."""


ATTEMPTS = 5


def on_free_port(start: Callable[[int], Any], what: str, attempts: int = ATTEMPTS) -> Any:
    """`start(port)` on a fresh free port, again on another one when it raises PortTaken."""
    errors = []
    for _ in range(attempts):
        try:
            return start(free_port())
        except PortTaken as exc:
            errors.append(str(exc))
    raise AssertionError(f"{what}: lost the port {attempts} times: {errors}")


def port_taken(text: str) -> bool:
    text = text.lower()
    return "address already in use" in text or "could not bind" in text


def wait_for(check: Callable[[], Any], timeout: float, what: str, diagnostics=None) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` (and logs) on timeout.

    A deadline for *waiting*, not a timed assertion: slow machines only wait longer.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except AssertionError:  # a real failure (GraphQL error, failed run): stop waiting
            raise
        except Exception as exc:  # the server may not be up yet
            last_error = exc
        time.sleep(0.5)
    details = diagnostics() if diagnostics else ""
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}; last error: {last_error!r}\n{details}"
    )


# --- PostgreSQL ----------------------------------------------------------------------------


def postgres_bindir() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class Postgres:
    host: str
    port: int
    user: str
    password: str

    def url(self, database: str) -> str:
        return (
            f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/{database}"
        )


def _as_postgres_user(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; CI runs the tests as root.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@contextlib.contextmanager
def postgres_server() -> Iterator[Postgres]:
    bindir = postgres_bindir()
    if bindir is None:
        message = "PostgreSQL server binaries (initdb, pg_ctl) not found; .ci/run installs them"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="recsys-pg-"))
    data, log = root / "data", root / "postgres.log"
    password = "recsys-test-secret"
    (root / "pw").write_text(password)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(root / "pw", "postgres", "postgres")
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log)]
    started = False

    def start(port: int) -> int:
        seen = log.stat().st_size if log.exists() else 0
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off"
        proc = subprocess.run(
            _as_postgres_user([*pg_ctl, "-o", options, "-w", "-t", "120", "start"]),
            capture_output=True,
        )
        if proc.returncode != 0:
            text = log.read_bytes()[seen:].decode(errors="replace") if log.exists() else ""
            if port_taken(text):
                raise PortTaken(f"port {port}")
            raise subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout, text)
        return port

    try:
        subprocess.run(
            _as_postgres_user(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "recsys",
                    "-A",
                    "scram-sha-256",
                    f"--pwfile={root / 'pw'}",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
        )
        port = on_free_port(start, "PostgreSQL")
        started = True
        server = Postgres("127.0.0.1", port, "recsys", password)
        import sqlalchemy as sa

        admin = sa.create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in ("dagster", "ratings"):
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))  # fixed names, not input
        admin.dispose()
        yield server
    finally:
        if started:
            subprocess.run(
                _as_postgres_user([*pg_ctl, "-m", "immediate", "-w", "stop"]), capture_output=True
            )
        shutil.rmtree(root, ignore_errors=True)


# --- Dagster processes ---------------------------------------------------------------------


class Process:
    """A child in its own process group, its output in a log file."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name, self.cmd, self.env = name, cmd, env
        self.log = logdir / f"{name}.log"
        self.popen: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.cmd,
                env=self.env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        pgid = os.getpgid(self.popen.pid)
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        # Run workers and gRPC servers are children in the same group: make sure all are gone.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)

    def tail(self, lines: int = 60) -> str:
        if not self.log.exists():
            return ""
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.name} log ---\n" + "\n".join(text)


LOCATION = {"repositoryLocationName": "recsys_assets", "repositoryName": "__repository__"}
LAUNCH = """
mutation Launch($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""
_ALL_RUNS = """
{ runsOrError { ... on Runs { results { runId jobName status startTime endTime
  tags { key value } } } } }"""


class Deployment:
    """dagster-webserver + dagster-daemon on this project's workspace.yaml and dagster.yaml."""

    def __init__(self, env: dict[str, str], root: Path) -> None:
        self.env = env
        self.root = root
        self.port = 0
        self.url = ""
        self.webserver = self._webserver(0)
        self.daemon = Process(
            "daemon",
            [str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
            env,
            root,
        )

    def _webserver(self, port: int) -> Process:
        cmd = [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port)]
        return Process("webserver", [*cmd, "-w", str(REPO / "workspace.yaml")], self.env, self.root)

    def start_webserver(self, timeout: float = 300) -> None:
        """Start the webserver on a free port; on another one if that port was taken first."""

        def start(port: int) -> int:
            self.webserver = self._webserver(port)
            seen = self.webserver.log.stat().st_size if self.webserver.log.exists() else 0
            self.webserver.start()

            def listening_or_exited() -> bool:
                if self.webserver.popen.poll() is not None:
                    text = self.webserver.log.read_bytes()[seen:].decode(errors="replace")
                    if port_taken(text):
                        raise PortTaken(f"port {port}")
                    raise AssertionError(f"webserver exited\n{self.webserver.tail()}")
                with socket.socket() as s:
                    return s.connect_ex(("127.0.0.1", port)) == 0

            try:
                wait_for(listening_or_exited, timeout, "the webserver to listen", self.diagnostics)
            except PortTaken:
                self.webserver.stop()
                raise
            return port

        self.port = on_free_port(start, "dagster-webserver")
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Webserver, then daemon; returns once the code location is loaded."""
        self.start_webserver()
        self.daemon.start()
        self.wait_ready()

    def diagnostics(self) -> str:
        return "\n".join([self.daemon.tail(), self.webserver.tail(30)])

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            # The webserver's own message says why (e.g. a locked SQLite instance).
            raise GraphQLHTTPError(exc.code, exc.read().decode(errors="replace")) from exc
        if payload.get("errors"):
            raise AssertionError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def launch(
        self, job: str, run_config: dict, asset_selection: list[list[str]] | None = None
    ) -> str:
        """Launch a run as the UI does (the launchpad, or *Materialize* on the asset graph,
        which runs Dagster's implicit `__ASSET_JOB` over `asset_selection`); its run id."""
        selector: dict[str, Any] = {**LOCATION, "jobName": job}
        if asset_selection is not None:
            selector["assetSelection"] = [{"path": path} for path in asset_selection]
        params = {"selector": selector, "runConfigData": run_config, "mode": "default"}
        launched = self.graphql(LAUNCH, {"executionParams": params})["launchPipelineExecution"]
        if launched["__typename"] != "LaunchRunSuccess":
            raise AssertionError(f"launch of {job} failed: {launched}")
        return launched["run"]["runId"]

    def runs(self) -> dict[str, dict]:
        """Every run by id: jobName, status, startTime, endTime, tags (as a dict)."""
        results = self.graphql(_ALL_RUNS)["runsOrError"]["results"]
        for run in results:
            run["tags"] = {t["key"]: t["value"] for t in run["tags"]}
        return {run["runId"]: run for run in results}

    def wait_ready(self, timeout: float = 300) -> None:
        def location_loaded() -> bool:
            data = self.graphql(
                "{ workspaceOrError { ... on Workspace { locationEntries { name "
                "loadStatus locationOrLoadError { __typename ... on PythonError { message } } "
                "} } } }"
            )
            entries = data["workspaceOrError"]["locationEntries"]
            for entry in entries:
                error = entry["locationOrLoadError"]
                if error and error["__typename"] == "PythonError":
                    raise AssertionError(f"code location failed to load: {error['message']}")
            return any(e["loadStatus"] == "LOADED" and e["locationOrLoadError"] for e in entries)

        wait_for(
            location_loaded, timeout, "the webserver to load the code location", self.diagnostics
        )

    def stop(self) -> None:
        self.daemon.stop()
        self.webserver.stop()
