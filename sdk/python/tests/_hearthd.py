"""hearthd as a child process for the SDK tests, with a home of its own.

The home shares only the guest images that ./setup.sh built (a symlink to
$HEARTH_HOME/images, default ~/.hearth/images) and a copy of the KVM probe's verdict. The
repository must be built (``npm run build``) first.
"""

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional

REPO_ROOT = Path(__file__).resolve().parents[3]
SERVER_ENTRY = REPO_ROOT / "dist" / "src" / "server" / "main.js"
CLI_ENTRY = REPO_ROOT / "bin" / "hearth.js"

# The first boot may follow a KVM probe, and other tests may keep both cores busy.
START_TIMEOUT_SECONDS = 120
# Stopping closes every VM of this hearthd; each takes well under a second.
STOP_TIMEOUT_SECONDS = 60


def _node() -> str:
    node = os.environ.get("HEARTH_TEST_NODE") or shutil.which("node")
    if not node:
        raise RuntimeError("node is not on PATH; set HEARTH_TEST_NODE to the node binary.")
    return node


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class HearthdProcess:
    """One hearthd listening on 127.0.0.1:PORT (``unix_socket=False``) or on a Unix socket
    in its home."""

    def __init__(self, unix_socket: bool = False, env: Optional[Dict[str, str]] = None):
        if not SERVER_ENTRY.exists():
            raise RuntimeError(f"{SERVER_ENTRY} is missing; run `npm run build` first.")
        shared_home = Path(os.environ.get("HEARTH_HOME") or Path.home() / ".hearth")
        self.home = Path(tempfile.mkdtemp(prefix="hearth-sdk-py-"))
        (self.home / "images").symlink_to(shared_home / "images")
        if (shared_home / "accel.json").exists():
            shutil.copyfile(shared_home / "accel.json", self.home / "accel.json")

        if unix_socket:
            self.socket_path: Optional[str] = str(self.home / "hearthd.sock")
            listen = self.socket_path
            self.base_url = f"unix://{self.socket_path}"
        else:
            self.socket_path = None
            port = _free_port()
            listen = f"127.0.0.1:{port}"
            self.base_url = f"http://{listen}"
        self.environment = {
            **os.environ,
            "HEARTH_HOME": str(self.home),
            "HEARTH_RUN_DIR": str(self.home / "run"),
            "HEARTH_LISTEN": listen,
            "HEARTH_LOG_LEVEL": "info",
            # No warm pool and no snapshot, so this hearthd boots only the VMs tests request.
            "HEARTH_POOL_SIZE": "0",
            "HEARTH_SNAPSHOTS": "0",
            **(env or {}),
        }
        self.log_path = self.home / "hearthd.log"
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [_node(), str(SERVER_ENTRY)],
                env=self.environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise

    def _connection(self) -> http.client.HTTPConnection:
        if self.socket_path is None:
            host, port = self.base_url[len("http://") :].split(":")
            return http.client.HTTPConnection(host, int(port), timeout=5)
        connection = http.client.HTTPConnection("localhost", timeout=5)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(5)
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        connection.sock = sock
        return connection

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"hearthd exited with code {self._process.returncode} while starting:\n"
                    + self.log_tail()
                )
            try:
                connection = self._connection()
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    connection.close()
                    return
                connection.close()
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(
            f"hearthd did not answer within {START_TIMEOUT_SECONDS} s:\n" + self.log_tail()
        )

    def create_key(self, name: str) -> str:
        """Create an API key with `hearth keys create` and return it."""
        run = subprocess.run(
            [_node(), str(CLI_ENTRY), "keys", "create", "--name", name],
            env=self.environment,
            capture_output=True,
            text=True,
            timeout=60,
        )
        match = re.search(r"\bhk_[A-Za-z0-9_-]+", run.stdout)
        if run.returncode != 0 or not match:
            raise RuntimeError(f"hearth keys create failed:\n{run.stdout}{run.stderr}")
        return match.group(0)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def stop(self) -> None:
        """Stop hearthd with SIGTERM, which closes its VMs, then delete its home."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self.home, ignore_errors=True)
