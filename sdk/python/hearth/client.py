"""The Hearth class: one session on a hearthd, and the calls on it."""

import contextlib
import io
import os
import tempfile
import urllib.parse
from typing import Any, Callable, Dict, List, Optional, Union

from ._transport import CHUNK_BYTES, Transport, parse_json
from .errors import HearthError, ServerUnreachableError, create_error

PathLike = Union[str, "os.PathLike[str]"]

#: Seconds each socket operation may wait, for calls other than session creation and
#: execute. A minute is far longer than any of these takes on a working server.
DEFAULT_REQUEST_TIMEOUT_SECONDS = 60.0
# Session creation waits for the VM to boot; hearthd allows a boot 60 s by default, and a
# busy host boots slower still.
CREATE_TIMEOUT_SECONDS = 180.0
# The limit hearthd applies to code when a call gives none.
SERVER_DEFAULT_EXECUTE_TIMEOUT_SECONDS = 60.0
# The server keeps a timed-out call up to 2 s more while it interrupts Python, and a call
# may wait behind others, so the socket gets this long beyond the code's own limit.
EXECUTE_GRACE_SECONDS = 30.0


def _default_base_url() -> str:
    url = os.environ.get("HEARTH_URL")
    if url:
        return url
    home = os.environ.get("HEARTH_HOME") or os.path.join(os.path.expanduser("~"), ".hearth")
    return "unix://" + os.path.join(home, "hearthd.sock")


class Hearth:
    """A sandbox session on a hearthd: a microVM whose Python variables, Bash working
    directory and files persist from call to call until ``close_session()``.

    Creating a ``Hearth`` boots the VM, which takes about 3 s under software emulation.

    Args:
        api_key: Sent as ``Authorization: Bearer``. Default: ``HEARTH_API_KEY``. Not needed
            over the local Unix socket.
        base_url: ``http://127.0.0.1:PORT`` or ``unix:///path/to/hearthd.sock``. Default:
            ``HEARTH_URL``, else the local socket ``$HEARTH_HOME/hearthd.sock``
            (``~/.hearth/hearthd.sock``).
        cpu_count: Virtual CPUs, 1-8. Server default 1.
        memory_mb: Guest memory in MiB, 128-16384. Server default 512.
        disk_mb: Scratch disk in MiB, 64-65536; the session's disk quota. Server default 2048.
        env: Environment variables for every call in the session.
        lifetime_seconds: Seconds until the server closes the session, at least 10. Server
            default 3600; a value over the server's maximum raises InvalidRequestError.
        egress: The network policy as the API takes it, e.g.
            ``{"allow_domains": ["pypi.org"]}``. Default: no network.
        session_id: Attach to this existing session instead of creating one.
        request_timeout: Seconds each socket operation may wait, for calls other than
            session creation (180 s) and execute (its timeout plus 30 s). Default 60.

    Raises:
        HearthError: a subclass for the failure, e.g. AuthenticationError or
            InvalidRequestError.
    """

    def __init__(
        self,
        api_key: Optional[str] = None,
        base_url: Optional[str] = None,
        *,
        cpu_count: Optional[int] = None,
        memory_mb: Optional[int] = None,
        disk_mb: Optional[int] = None,
        env: Optional[Dict[str, str]] = None,
        lifetime_seconds: Optional[int] = None,
        egress: Optional[Dict[str, Any]] = None,
        session_id: Optional[str] = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT_SECONDS,
    ):
        if api_key is None:
            api_key = os.environ.get("HEARTH_API_KEY")
        self._transport = Transport(base_url or _default_base_url(), api_key)
        self._request_timeout = request_timeout
        self._closed_info: Optional[Dict[str, Any]] = None

        if session_id is not None:
            self._session_id = session_id
            self.info()
            return
        options = {
            "cpu_count": cpu_count,
            "memory_mb": memory_mb,
            "disk_mb": disk_mb,
            "env": env,
            "lifetime_seconds": lifetime_seconds,
            "egress": egress,
        }
        body = {name: value for name, value in options.items() if value is not None}
        session = self._transport.call_json(
            "POST", "/v1/sessions", json_body=body, timeout=CREATE_TIMEOUT_SECONDS
        )
        self._session_id = session["id"]

    @property
    def session_id(self) -> str:
        return self._session_id

    def __enter__(self) -> "Hearth":
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        try:
            self.close_session()
        except HearthError:
            # An error from the block matters more than one from closing after it.
            if exc_type is None:
                raise

    def __repr__(self) -> str:
        return f"Hearth(session_id={self._session_id!r}, base_url={self._transport.base_url!r})"

    def info(self) -> Dict[str, Any]:
        """Return the session as the API describes it: state, resources, expires_at."""
        return self._transport.call_json(
            "GET", self._session_path(), timeout=self._request_timeout
        )

    def list_sessions(self) -> List[Dict[str, Any]]:
        """Return every running session that this client's key (or the socket) owns."""
        body = self._transport.call_json("GET", "/v1/sessions", timeout=self._request_timeout)
        return body["sessions"]

    def execute(
        self,
        code: str,
        language: str = "python",
        timeout: Optional[float] = None,
        *,
        env: Optional[Dict[str, str]] = None,
        cwd: Optional[str] = None,
        output_limit_bytes: Optional[int] = None,
        raw_output: bool = False,
        on_stdout: Optional[Callable[[str], None]] = None,
        on_stderr: Optional[Callable[[str], None]] = None,
    ) -> Dict[str, Any]:
        """Run Python or Bash code in the session and return the result.

        Args:
            code: The program text.
            language: ``"python"`` (variables persist between calls) or ``"bash"``.
            timeout: Seconds the code may run in the guest. Server default 60, maximum 3600.
            env: Environment variables for this call only.
            cwd: Absolute working directory; a missing one raises InvalidRequestError.
            output_limit_bytes: Bytes kept per stream before truncation. Server default 4 MiB.
            raw_output: Also return ``stdout_base64`` and ``stderr_base64``.
            on_stdout, on_stderr: Called with each piece of output as the code prints it.
                Giving either streams the response; the pieces joined equal the result's
                ``stdout`` and ``stderr``.

        Returns:
            A dict with ``stdout``, ``stderr``, ``exit_code``, ``status`` (``ok``,
            ``error`` or ``timeout``), ``error`` (``{name, value, traceback}`` for a Python
            exception, else None), ``execution_time`` (seconds), ``signal`` (or None),
            ``truncated``, ``stdout_bytes``, ``stderr_bytes``, ``kernel_restarted`` and
            ``timing``. A failing program is a result, not an exception.
        """
        body: Dict[str, Any] = {"code": code, "language": language}
        if timeout is not None:
            body["timeout_seconds"] = timeout
        if env is not None:
            body["env"] = env
        if cwd is not None:
            body["cwd"] = cwd
        if output_limit_bytes is not None:
            body["output_limit_bytes"] = output_limit_bytes
        if raw_output:
            body["raw_output"] = True
        socket_timeout = (
            timeout if timeout is not None else SERVER_DEFAULT_EXECUTE_TIMEOUT_SECONDS
        ) + EXECUTE_GRACE_SECONDS
        path = self._session_path("/execute")

        if on_stdout is None and on_stderr is None:
            result = self._transport.call_json(
                "POST", path, json_body=body, timeout=socket_timeout
            )
        else:
            result = self._execute_streamed(path, body, socket_timeout, on_stdout, on_stderr)
        result.setdefault("signal", None)
        return result

    def _execute_streamed(
        self,
        path: str,
        body: Dict[str, Any],
        socket_timeout: float,
        on_stdout: Optional[Callable[[str], None]],
        on_stderr: Optional[Callable[[str], None]],
    ) -> Dict[str, Any]:
        transport = self._transport
        with transport.open(
            "POST", path, json_body=body, timeout=socket_timeout, accept="application/x-ndjson"
        ) as response:
            while True:
                with transport.network_errors(socket_timeout):
                    line = response.readline()
                if not line:
                    raise ServerUnreachableError(
                        "connection_lost", "The execute stream ended before its result arrived."
                    )
                if not line.strip():
                    continue
                event = parse_json(line)
                kind = event.get("type")
                if kind == "stdout" and on_stdout is not None:
                    on_stdout(event["data"])
                elif kind == "stderr" and on_stderr is not None:
                    on_stderr(event["data"])
                elif kind == "result":
                    return event["result"]
                elif kind == "error":
                    raise create_error(event["error"]["code"], event["error"]["message"])

    def upload_file(self, local_path: PathLike, remote_path: str) -> Dict[str, Any]:
        """Upload a local file to an absolute path in the guest, replacing any file there.

        The file is sent in 64 KiB chunks as it is read, so it never sits in memory whole.
        Returns ``{"path": remote_path, "size": bytes}``.
        """
        with open(local_path, "rb") as source:
            size = os.fstat(source.fileno()).st_size
            return self._transport.call_json(
                "PUT",
                self._session_path("/files"),
                query={"path": remote_path},
                body=source,
                content_length=size,
                timeout=self._request_timeout,
            )

    def write_file(self, remote_path: str, data: Union[bytes, str]) -> Dict[str, Any]:
        """Write bytes, or a string as UTF-8, to an absolute path in the guest."""
        payload = data.encode() if isinstance(data, str) else bytes(data)
        return self._transport.call_json(
            "PUT",
            self._session_path("/files"),
            query={"path": remote_path},
            body=io.BytesIO(payload),
            content_length=len(payload),
            timeout=self._request_timeout,
        )

    def download_file(self, remote_path: str, local_path: PathLike) -> Dict[str, Any]:
        """Download a file from the guest to ``local_path``, replacing any file there.

        The bytes are written in 64 KiB chunks to a temporary file beside ``local_path``,
        which is renamed into place once complete, so a failed download leaves no partial
        file. The new file has mode 0600. Returns ``{"path": local_path, "size": bytes}``.
        """
        local_path = os.fspath(local_path)
        directory = os.path.dirname(os.path.abspath(local_path))
        with self._transport.open(
            "GET",
            self._session_path("/files"),
            query={"path": remote_path},
            accept="application/octet-stream",
            timeout=self._request_timeout,
        ) as response:
            descriptor, temporary = tempfile.mkstemp(prefix=".hearth-download-", dir=directory)
            try:
                size = 0
                with os.fdopen(descriptor, "wb") as target:
                    while True:
                        with self._transport.network_errors(self._request_timeout):
                            chunk = response.read(CHUNK_BYTES)
                        if not chunk:
                            break
                        target.write(chunk)
                        size += len(chunk)
                os.replace(temporary, local_path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
                raise
        return {"path": local_path, "size": size}

    def read_file(self, remote_path: str) -> bytes:
        """Return a file's contents from the guest; for large files use download_file."""
        with self._transport.open(
            "GET",
            self._session_path("/files"),
            query={"path": remote_path},
            accept="application/octet-stream",
            timeout=self._request_timeout,
        ) as response:
            with self._transport.network_errors(self._request_timeout):
                return response.read()

    def list_files(self, path: str) -> Dict[str, Any]:
        """List a directory in the guest.

        Returns ``{"path", "truncated", "entries"}``; each entry has ``name``, ``type``
        (``file``, ``directory``, ``symlink`` or ``other``), ``size`` in bytes, ``mode``
        (permission bits) and ``mtime`` (ISO 8601).
        """
        return self._transport.call_json(
            "GET",
            self._session_path("/files/list"),
            query={"path": path},
            timeout=self._request_timeout,
        )

    def close_session(self) -> Dict[str, Any]:
        """Close the session and destroy its VM. Calling it again returns the same info."""
        if self._closed_info is None:
            self._closed_info = self._transport.call_json(
                "DELETE", self._session_path(), timeout=self._request_timeout
            )
        return self._closed_info

    def _session_path(self, suffix: str = "") -> str:
        return f"/v1/sessions/{urllib.parse.quote(self._session_id, safe='')}{suffix}"

