"""Python client for hearth: run untrusted Python and Bash in microVM sessions.

    from hearth import Hearth

    with Hearth(base_url="http://127.0.0.1:8700", api_key="hk_...") as sandbox:
        print(sandbox.execute("print(6 * 7)")["stdout"])
"""

from .client import Hearth
from .errors import (
    AuthenticationError,
    HearthError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ServerUnreachableError,
    ServiceUnavailableError,
    SessionBusyError,
    SessionClosedError,
)

__all__ = [
    "AuthenticationError",
    "Hearth",
    "HearthError",
    "InvalidRequestError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RequestTimeoutError",
    "ServerUnreachableError",
    "ServiceUnavailableError",
    "SessionBusyError",
    "SessionClosedError",
]
__version__ = "0.1.0"
