"""HTTP to hearthd over TCP or a Unix socket, with errors mapped to HearthError."""

import contextlib
import http.client
import json
import socket
import urllib.parse
from typing import IO, Any, Dict, Iterator, Optional

from .errors import (
    HearthError,
    InvalidRequestError,
    RequestTimeoutError,
    ServerUnreachableError,
    create_error,
)

#: Bytes per read and write of a file transfer; large enough to keep syscalls few.
CHUNK_BYTES = 64 * 1024
# Error bodies are one short JSON object; anything longer is not hearthd's.
MAX_ERROR_BODY_BYTES = 64 * 1024


class _UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to a Unix socket; the Host header says ``localhost``."""

    def __init__(self, socket_path: str, timeout: Optional[float]):
        super().__init__("localhost", timeout=timeout, blocksize=CHUNK_BYTES)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class Transport:
    """Sends requests to one hearthd: ``http://host:port``, ``https://...`` or
    ``unix:///path/to/hearthd.sock``."""

    def __init__(self, base_url: str, api_key: Optional[str]):
        self.base_url = base_url
        self._api_key = api_key
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme == "unix":
            if not parsed.path:
                raise InvalidRequestError(
                    "invalid_config",
                    f"The base URL {base_url} names no socket; "
                    "write it as unix:///path/to/hearthd.sock.",
                )
            self._socket_path = parsed.path
            self._prefix = ""
        elif parsed.scheme in ("http", "https") and parsed.hostname:
            self._socket_path = None
            self._prefix = parsed.path.rstrip("/")
        else:
            raise InvalidRequestError(
                "invalid_config",
                f"The base URL {base_url} is not http://host:port, https://host:port "
                "or unix:///path/to/hearthd.sock.",
            )
        self._parsed = parsed

    def _connect(self, timeout: Optional[float]) -> http.client.HTTPConnection:
        if self._socket_path is not None:
            return _UnixHTTPConnection(self._socket_path, timeout)
        connection_class = (
            http.client.HTTPSConnection
            if self._parsed.scheme == "https"
            else http.client.HTTPConnection
        )
        return connection_class(
            self._parsed.hostname, self._parsed.port, timeout=timeout, blocksize=CHUNK_BYTES
        )

    @contextlib.contextmanager
    def open(
        self,
        method: str,
        path: str,
        *,
        timeout: Optional[float],
        query: Optional[Dict[str, str]] = None,
        json_body: Any = None,
        body: Optional[IO[bytes]] = None,
        content_length: Optional[int] = None,
        accept: str = "application/json",
    ) -> Iterator[http.client.HTTPResponse]:
        """Send one request and yield the successful response.

        A 4xx or 5xx response raises the HearthError subclass for its code. ``timeout`` is
        in seconds and applies to each socket operation, not to the whole call. A file
        ``body`` is sent in CHUNK_BYTES pieces with ``content_length`` as its length.
        """
        url = self._prefix + path
        if query:
            url += "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
        headers = {"Accept": accept}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        payload: Any = None
        if json_body is not None:
            payload = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        elif body is not None:
            payload = body
            headers["Content-Type"] = "application/octet-stream"
            headers["Content-Length"] = str(content_length)

        connection = self._connect(timeout)
        try:
            with self.network_errors(timeout):
                response = self._send(connection, method, url, payload, headers)
            if response.status >= 400:
                raise self._error_from(response, timeout)
            yield response
        finally:
            connection.close()

    def call_json(self, method: str, path: str, *, timeout: Optional[float], **kwargs: Any) -> Any:
        """Send one request and return its parsed JSON body."""
        with self.open(method, path, timeout=timeout, **kwargs) as response:
            with self.network_errors(timeout):
                text = response.read()
        return parse_json(text)

    @contextlib.contextmanager
    def network_errors(self, timeout: Optional[float]) -> Iterator[None]:
        """Turn socket failures inside the block into HearthErrors that name the cause."""
        try:
            yield
        except socket.timeout as error:
            raise RequestTimeoutError(
                "request_timeout",
                f"hearthd at {self.base_url} sent nothing for {timeout} s; "
                "raise the timeout or check the server.",
            ) from error
        except http.client.IncompleteRead as error:
            raise ServerUnreachableError(
                "connection_lost",
                f"The connection to hearthd closed after {len(error.partial)} bytes "
                "of the response.",
            ) from error
        except ConnectionRefusedError as error:
            raise ServerUnreachableError(
                "server_unreachable",
                f"Could not reach hearthd at {self.base_url}: {error}.",
            ) from error
        except (http.client.HTTPException, ConnectionError) as error:
            raise ServerUnreachableError(
                "connection_lost",
                f"The connection to hearthd at {self.base_url} broke: {error!r}.",
            ) from error
        except OSError as error:
            raise ServerUnreachableError(
                "server_unreachable",
                f"Could not reach hearthd at {self.base_url}: {error}.",
            ) from error

    def _send(
        self,
        connection: http.client.HTTPConnection,
        method: str,
        url: str,
        payload: Any,
        headers: Dict[str, str],
    ) -> http.client.HTTPResponse:
        try:
            connection.request(method, url, body=payload, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            # The server may respond early, e.g. 413 for an upload over its limit, and stop
            # reading the body. That response is the useful error; getresponse raises if none
            # arrived.
            pass
        return connection.getresponse()

    def _error_from(self, response: http.client.HTTPResponse, timeout: Optional[float]) -> HearthError:
        with self.network_errors(timeout):
            text = response.read(MAX_ERROR_BODY_BYTES)
        try:
            error = json.loads(text)["error"]
            return create_error(str(error["code"]), str(error["message"]), response.status)
        except (ValueError, KeyError, TypeError):
            return create_error(
                "invalid_response",
                f"hearthd returned HTTP {response.status} without an error body: "
                f"{text[:200]!r}",
                response.status,
            )


def parse_json(text: bytes) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise HearthError(
            "invalid_response", f"hearthd sent a body that is not JSON: {text[:200]!r}"
        ) from error
