"""The Python SDK against real hearthd processes and real VMs.

Run from the repository root after `npm run build`:

    /usr/bin/python3 -m unittest discover -s sdk/python/tests -v
"""

import hashlib
import os
import shutil
import socket
import sys
import tempfile
import threading
import tracemalloc
import unittest
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _hearthd import HearthdProcess  # noqa: E402

from hearth import (  # noqa: E402
    AuthenticationError,
    Hearth,
    HearthError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ServerUnreachableError,
    SessionClosedError,
)

MiB = 1024 * 1024
# Small enough to test the limit cheaply, and over the largest file the tests send.
MAX_UPLOAD_BYTES = 8 * MiB


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        for chunk in iter(lambda: source.read(MiB), b""):
            digest.update(chunk)
    return digest.hexdigest()


class TcpSessionTest(unittest.TestCase):
    """One session over TCP with an API key, shared by every test in this class."""

    server: HearthdProcess
    sandbox: Hearth
    other_key: str

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = HearthdProcess(env={"HEARTH_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES)})
        try:
            cls.key = cls.server.create_key("sdk-python")
            cls.other_key = cls.server.create_key("sdk-python-other")
            cls.sandbox = Hearth(
                api_key=cls.key,
                base_url=cls.server.base_url,
                cpu_count=1,
                memory_mb=512,
                env={"GREETING": "hello"},
                lifetime_seconds=900,
            )
        except BaseException:
            cls.server.stop()
            raise
        cls.local = Path(tempfile.mkdtemp(prefix="hearth-sdk-py-local-"))

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            cls.sandbox.close_session()
        finally:
            cls.server.stop()
            shutil.rmtree(cls.local, ignore_errors=True)

    def guest_sha256(self, remote_path: str) -> str:
        result = self.sandbox.execute(
            "import hashlib\n"
            f"print(hashlib.sha256(open({remote_path!r}, 'rb').read()).hexdigest())"
        )
        self.assertEqual(result["status"], "ok", result["stderr"])
        return result["stdout"].strip()

    def round_trip(self, local_file: Path, remote_path: str) -> None:
        uploaded = self.sandbox.upload_file(local_file, remote_path)
        self.assertEqual(uploaded, {"path": remote_path, "size": local_file.stat().st_size})
        self.assertEqual(self.guest_sha256(remote_path), file_sha256(local_file))
        copy = self.local / (local_file.name + ".downloaded")
        downloaded = self.sandbox.download_file(remote_path, copy)
        self.assertEqual(downloaded["size"], local_file.stat().st_size)
        self.assertEqual(file_sha256(copy), file_sha256(local_file))

    def test_session_info(self) -> None:
        info = self.sandbox.info()
        self.assertEqual(info["id"], self.sandbox.session_id)
        self.assertIn(info["state"], ("ready", "busy"))
        self.assertEqual(info["cpu_count"], 1)
        self.assertEqual(info["memory_mb"], 512)
        self.assertEqual(info["env_keys"], ["GREETING"])
        listed = [session["id"] for session in self.sandbox.list_sessions()]
        self.assertIn(self.sandbox.session_id, listed)

    def test_execute_keeps_python_state(self) -> None:
        self.sandbox.execute("counter = 41")
        result = self.sandbox.execute("print(counter + 1)")
        self.assertEqual(result["stdout"], "42\n")
        self.assertEqual(result["stderr"], "")
        self.assertEqual(result["status"], "ok")
        self.assertEqual(result["exit_code"], 0)
        self.assertIsNone(result["error"])
        self.assertIsNone(result["signal"])
        self.assertIsInstance(result["execution_time"], float)
        for field in ("truncated", "stdout_bytes", "stderr_bytes", "kernel_restarted", "timing"):
            self.assertIn(field, result)

    def test_execute_reports_exception(self) -> None:
        result = self.sandbox.execute('print("before")\nraise ValueError("bad")')
        self.assertEqual(result["status"], "error")
        self.assertEqual(result["exit_code"], 1)
        self.assertEqual(result["stdout"], "before\n")
        self.assertEqual(result["error"]["name"], "ValueError")
        self.assertEqual(result["error"]["value"], "bad")
        self.assertIn("Traceback", result["error"]["traceback"])

    def test_execute_bash_env_cwd(self) -> None:
        result = self.sandbox.execute(
            'pwd; echo "$CALL_ONLY $GREETING"; exit 3',
            language="bash",
            env={"CALL_ONLY": "one"},
            cwd="/tmp",
        )
        self.assertEqual(result["stdout"], "/tmp\none hello\n")
        self.assertEqual(result["exit_code"], 3)
        self.assertEqual(result["status"], "error")

    def test_execute_timeout(self) -> None:
        result = self.sandbox.execute(
            'import time\nprint("started", flush=True)\ntime.sleep(30)', timeout=1.5
        )
        self.assertEqual(result["status"], "timeout")
        self.assertEqual(result["stdout"], "started\n")

    def test_execute_streams_same_output(self) -> None:
        code = (
            "import sys, time\n"
            "for i in range(5):\n"
            '    print(f"line {i} ✓ ünïcode 🙂", flush=True)\n'
            '    sys.stderr.write(f"err {i}\\n"); sys.stderr.flush()\n'
            "    time.sleep(0.1)\n"
        )
        stdout_pieces, stderr_pieces = [], []
        streamed = self.sandbox.execute(
            code, on_stdout=stdout_pieces.append, on_stderr=stderr_pieces.append
        )
        buffered = self.sandbox.execute(code)
        self.assertTrue(stdout_pieces)
        self.assertEqual("".join(stdout_pieces), streamed["stdout"])
        self.assertEqual("".join(stderr_pieces), streamed["stderr"])
        self.assertEqual(streamed["stdout"], buffered["stdout"])
        self.assertEqual(streamed["stderr"], buffered["stderr"])
        self.assertTrue(buffered["stdout"].startswith("line 0 ✓ ünïcode 🙂\n"))

    def test_round_trip_every_byte_value(self) -> None:
        path = self.local / "every-byte.bin"
        path.write_bytes(bytes(range(256)) * (MiB // 256))
        self.round_trip(path, "/tmp/every-byte.bin")

    def test_round_trip_zip(self) -> None:
        path = self.local / "archive.zip"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("hello.txt", "hello from the host\n")
            archive.writestr("données/数据.bin", os.urandom(200_000))
            archive.writestr("zeros.bin", bytes(300_000))
        self.round_trip(path, "/tmp/archive.zip")
        check = self.sandbox.execute(
            "import zipfile\n"
            'with zipfile.ZipFile("/tmp/archive.zip") as archive:\n'
            "    print(archive.testzip())\n"
            '    print(",".join(archive.namelist()))\n'
        )
        self.assertEqual(check["stdout"], "None\nhello.txt,données/数据.bin,zeros.bin\n")

    def test_round_trip_random_4mib(self) -> None:
        path = self.local / "random.bin"
        path.write_bytes(os.urandom(4 * MiB))
        self.round_trip(path, "/tmp/random.bin")

    def test_transfers_stay_chunked(self) -> None:
        path = self.local / "chunked.bin"
        path.write_bytes(os.urandom(4 * MiB))
        tracemalloc.start()
        try:
            self.sandbox.upload_file(path, "/tmp/chunked.bin")
            _, upload_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            self.sandbox.download_file("/tmp/chunked.bin", self.local / "chunked.copy")
            _, download_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(upload_peak, MiB, "the upload held the file in memory")
        self.assertLess(download_peak, MiB, "the download held the file in memory")
        self.assertEqual(file_sha256(self.local / "chunked.copy"), file_sha256(path))

    def test_write_and_read_non_ascii_name(self) -> None:
        remote = "/tmp/заметки 笔记 ✓.txt"
        self.sandbox.write_file(remote, "première ligne\nzweite Zeile 🙂\n")
        self.assertEqual(
            self.sandbox.read_file(remote).decode(), "première ligne\nzweite Zeile 🙂\n"
        )
        names = [entry["name"] for entry in self.sandbox.list_files("/tmp")["entries"]]
        self.assertIn("заметки 笔记 ✓.txt", names)

    def test_list_files(self) -> None:
        self.sandbox.write_file("/tmp/listed/a.txt", b"abc")
        self.sandbox.execute(
            "mkdir -p /tmp/listed/sub && ln -sf a.txt /tmp/listed/link", language="bash"
        )
        listing = self.sandbox.list_files("/tmp/listed")
        self.assertEqual(listing["path"], "/tmp/listed")
        self.assertFalse(listing["truncated"])
        entries = {entry["name"]: entry for entry in listing["entries"]}
        self.assertEqual(sorted(entries), ["a.txt", "link", "sub"])
        self.assertEqual(entries["a.txt"]["type"], "file")
        self.assertEqual(entries["a.txt"]["size"], 3)
        self.assertEqual(entries["sub"]["type"], "directory")
        self.assertEqual(entries["link"]["type"], "symlink")

    def test_missing_file_not_found(self) -> None:
        target = self.local / "never-written"
        with self.assertRaises(NotFoundError) as caught:
            self.sandbox.download_file("/tmp/does-not-exist", target)
        self.assertEqual(caught.exception.code, "file_not_found")
        self.assertEqual(caught.exception.status, 404)
        self.assertFalse(target.exists())

    def test_directory_not_a_file(self) -> None:
        with self.assertRaises(InvalidRequestError) as caught:
            self.sandbox.read_file("/tmp")
        self.assertEqual(caught.exception.code, "not_a_file")
        self.assertEqual(caught.exception.status, 400)

    def test_escaping_path_rejected(self) -> None:
        for remote in ("relative.txt", "/tmp/../etc/passwd"):
            with self.subTest(remote=remote):
                with self.assertRaises(InvalidRequestError) as caught:
                    self.sandbox.write_file(remote, b"x")
                self.assertEqual(caught.exception.code, "invalid_path")

    def test_upload_over_limit(self) -> None:
        path = self.local / "too-large.bin"
        with open(path, "wb") as sparse:
            sparse.truncate(MAX_UPLOAD_BYTES + 1)
        with self.assertRaises(PayloadTooLargeError) as caught:
            self.sandbox.upload_file(path, "/tmp/too-large.bin")
        self.assertEqual(caught.exception.code, "file_too_large")
        self.assertEqual(caught.exception.status, 413)

    def test_request_without_key(self) -> None:
        with self.assertRaises(AuthenticationError) as caught:
            Hearth(api_key="", base_url=self.server.base_url)
        self.assertEqual(caught.exception.code, "unauthorized")
        self.assertEqual(caught.exception.status, 401)

    def test_other_key_not_found(self) -> None:
        with self.assertRaises(NotFoundError) as caught:
            Hearth(
                api_key=self.other_key,
                base_url=self.server.base_url,
                session_id=self.sandbox.session_id,
            )
        self.assertEqual(caught.exception.code, "session_not_found")

    def test_attach_with_same_key(self) -> None:
        attached = Hearth(
            api_key=self.key, base_url=self.server.base_url, session_id=self.sandbox.session_id
        )
        self.assertEqual(attached.execute("print(counter_from_attach := 7)")["stdout"], "7\n")
        self.assertEqual(self.sandbox.execute("print(counter_from_attach)")["stdout"], "7\n")


class ClientErrorTest(unittest.TestCase):
    """Failures that need no VM."""

    def test_unreachable_server(self) -> None:
        with self.assertRaises(ServerUnreachableError) as caught:
            Hearth(api_key="hk_unused", base_url="http://127.0.0.1:1")
        self.assertEqual(caught.exception.code, "server_unreachable")

    def test_missing_socket(self) -> None:
        with self.assertRaises(ServerUnreachableError):
            Hearth(base_url="unix:///nonexistent/hearthd.sock")

    def test_silent_server_times_out(self) -> None:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            port = listener.getsockname()[1]
            accepted = []
            thread = threading.Thread(target=lambda: accepted.append(listener.accept()))
            thread.start()
            try:
                with self.assertRaises(RequestTimeoutError) as caught:
                    Hearth(
                        api_key="hk_unused",
                        base_url=f"http://127.0.0.1:{port}",
                        session_id="ses_0",
                        request_timeout=0.5,
                    )
                self.assertEqual(caught.exception.code, "request_timeout")
            finally:
                thread.join(5)
                for connection, _ in accepted:
                    connection.close()

    def test_bad_base_url(self) -> None:
        with self.assertRaises(InvalidRequestError) as caught:
            Hearth(base_url="ftp://example.invalid/")
        self.assertEqual(caught.exception.code, "invalid_config")

    def test_errors_share_one_base(self) -> None:
        for error_class in (
            AuthenticationError,
            NotFoundError,
            InvalidRequestError,
            PayloadTooLargeError,
            RequestTimeoutError,
            ServerUnreachableError,
            SessionClosedError,
        ):
            self.assertTrue(issubclass(error_class, HearthError))


class UnixSocketTest(unittest.TestCase):
    """A session over the local Unix socket, where no API key is needed."""

    def test_context_manager_session(self) -> None:
        server = HearthdProcess(unix_socket=True)
        local = Path(tempfile.mkdtemp(prefix="hearth-sdk-py-unix-"))
        try:
            with Hearth(base_url=server.base_url, api_key="", cpu_count=1) as sandbox:
                self.assertEqual(sandbox.execute("print(6 * 7)")["stdout"], "42\n")
                source = local / "source.bin"
                source.write_bytes(os.urandom(300_000))
                sandbox.upload_file(source, "/root/source.bin")
                sandbox.download_file("/root/source.bin", local / "copy.bin")
                self.assertEqual(file_sha256(local / "copy.bin"), file_sha256(source))
            closed = Hearth(
                base_url=server.base_url, api_key="", session_id=sandbox.session_id
            ).info()
            self.assertEqual(closed["state"], "closed")
            self.assertEqual(closed["close_reason"], "closed")
            with self.assertRaises(SessionClosedError) as caught:
                sandbox.execute("print(1)")
            self.assertEqual(caught.exception.code, "session_closed")
        finally:
            server.stop()
            shutil.rmtree(local, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
