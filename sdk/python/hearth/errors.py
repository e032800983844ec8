"""Errors raised by the hearth SDK.

Every error is a ``HearthError`` with a stable ``code``: the API's error code (for example
``session_not_found``) or one of the SDK's own (``request_timeout``,
``server_unreachable``, ``connection_lost``, ``invalid_config``, ``invalid_response``).
Match on ``code``; the subclasses group codes by what a caller does about them.
"""

from typing import Dict, Optional, Type


class HearthError(Exception):
    """The base of every error the SDK raises."""

    def __init__(self, code: str, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.code = code
        self.message = message
        #: The HTTP status of the response, or None for errors without one.
        self.status = status

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class AuthenticationError(HearthError):
    """The API key is missing or not valid (``unauthorized``)."""


class NotFoundError(HearthError):
    """The session, file or route does not exist.

    A session that another API key created is reported as not found too.
    """


class InvalidRequestError(HearthError):
    """The request was rejected: a bad option, a path that escapes, a missing cwd."""


class SessionClosedError(HearthError):
    """The session was closed, reached its lifetime, or lost its VM."""


class SessionBusyError(HearthError):
    """The session is still booting or has too many calls waiting; retry later."""


class PayloadTooLargeError(HearthError):
    """A request body or file does not fit: it is over the server's upload limit, or the
    session's disk quota is used up (``disk_full``)."""


class ServiceUnavailableError(HearthError):
    """hearthd cannot serve the call now: no capacity, no images, a VM that failed or
    stopped, or a guest agent that returned an error."""


class RequestTimeoutError(HearthError):
    """The request ran past its time limit.

    Code that times out inside the guest is not an error: its result has
    ``status == "timeout"``.
    """


class ServerUnreachableError(HearthError):
    """hearthd could not be reached, or the connection broke before the response ended."""


#: Every error code the API and the SDK use, and the class raised for it.
CLASS_BY_CODE: Dict[str, Type[HearthError]] = {
    "unauthorized": AuthenticationError,
    "not_found": NotFoundError,
    "session_not_found": NotFoundError,
    "file_not_found": NotFoundError,
    "invalid_request": InvalidRequestError,
    "invalid_path": InvalidRequestError,
    "invalid_config": InvalidRequestError,
    "cwd_not_found": InvalidRequestError,
    "not_a_file": InvalidRequestError,
    "not_a_directory": InvalidRequestError,
    "invalid_egress_policy": InvalidRequestError,
    "lifetime_too_long": InvalidRequestError,
    "egress_not_supported": InvalidRequestError,
    "method_not_allowed": InvalidRequestError,
    "unsupported_media_type": InvalidRequestError,
    "session_closed": SessionClosedError,
    "session_expired": SessionClosedError,
    "session_lost": SessionClosedError,
    "session_busy": SessionBusyError,
    "payload_too_large": PayloadTooLargeError,
    "file_too_large": PayloadTooLargeError,
    "disk_full": PayloadTooLargeError,
    "capacity_exceeded": ServiceUnavailableError,
    "images_missing": ServiceUnavailableError,
    "vm_unavailable": ServiceUnavailableError,
    "vm_boot_failed": ServiceUnavailableError,
    "server_shutting_down": ServiceUnavailableError,
    "agent_error": ServiceUnavailableError,
    "file_error": ServiceUnavailableError,
    "request_timeout": RequestTimeoutError,
    "execution_timeout": RequestTimeoutError,
    "server_unreachable": ServerUnreachableError,
    "connection_lost": ServerUnreachableError,
}

#: The class for a code this SDK does not know yet, chosen by the HTTP status.
CLASS_BY_STATUS: Dict[int, Type[HearthError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    410: SessionClosedError,
    413: PayloadTooLargeError,
    502: ServiceUnavailableError,
    503: ServiceUnavailableError,
    507: PayloadTooLargeError,
    504: RequestTimeoutError,
}


def create_error(code: str, message: str, status: Optional[int] = None) -> HearthError:
    """Build the error for ``code``, as the subclass that CLASS_BY_CODE names for it."""
    error_class = CLASS_BY_CODE.get(code)
    if error_class is None and status is not None:
        error_class = CLASS_BY_STATUS.get(status)
    return (error_class or HearthError)(code, message, status)
