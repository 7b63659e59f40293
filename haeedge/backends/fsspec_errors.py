"""What an error from botocore, fsspec or a driver means for haeedge: the object is missing, the
failure is permanent (credentials, permissions, a bad request), or worth a retry."""

from __future__ import annotations

import errno
from collections.abc import Iterator

_TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
    "TooManyRequestsException", "RequestThrottled", "RequestTimeout", "RequestTimeoutException",
    "InternalError", "ServiceUnavailable", "503", "500", "502", "504", "OperationAborted",
    "XAmzContentSHA256Mismatch", "BadDigest", "IncompleteBody",
})
_PERMANENT_AUTH_CODES = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "AccountProblem", "AllAccessDisabled", "403", "401", "RequestTimeTooSkewed", "InvalidSecurity",
})
_TRANSIENT_ERRNOS = frozenset({
    errno.EBUSY, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED,
    errno.EPIPE, errno.EAGAIN, errno.EINTR, errno.ENETUNREACH, errno.EHOSTUNREACH,
    getattr(errno, "EREMOTEIO", errno.EIO),
})
_TRANSIENT_CLASS_NAMES = frozenset({
    "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
    "HTTPClientError", "ProxyConnectionError", "ResponseStreamingError", "IncompleteReadError",
    "ClientConnectionError", "ClientConnectorError", "ServerDisconnectedError", "ClientPayloadError",
    "ServerTimeoutError", "ClientOSError", "FSTimeoutError", "IncompleteRead",
    "ResponseParserError",
})
CREDENTIAL_CLASS_NAMES = frozenset({"NoCredentialsError", "PartialCredentialsError", "ProfileNotFound",
                                     "NoRegionError", "UnauthorizedSSOTokenError"})

def error_chain(e: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def error_code(e: BaseException) -> str:
    """The S3 error code (``NoSuchKey``, ``AccessDenied``, ...) somewhere in ``e``'s chain, else ""."""
    for exc in error_chain(e):
        response = getattr(exc, "response", None)
        if isinstance(response, dict) and "Error" in response:
            return str(response["Error"].get("Code", ""))
    return ""


def classify(e: BaseException) -> tuple[str, str]:
    """``("missing"|"permanent"|"transient", detail)`` for any error botocore, fsspec or a driver raises."""
    for exc in error_chain(e):
        response = getattr(exc, "response", None)
        if isinstance(response, dict) and "Error" in response:
            code = str(response["Error"].get("Code", ""))
            status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            message = response["Error"].get("Message") or code
            detail = f"{code or status}: {message}"
            if code in ("NoSuchKey", "404", "NotFound", "NoSuchBucket"):
                return "missing", detail
            if code in _PERMANENT_AUTH_CODES or status in (401, 403):
                return "permanent", detail
            if code in _TRANSIENT_CODES or status >= 500 or status == 429:
                return "transient", detail
            return "permanent", detail
        name = type(exc).__name__
        if name in CREDENTIAL_CLASS_NAMES:
            return "permanent", f"{name}: {exc}"
        if name in _TRANSIENT_CLASS_NAMES:
            return "transient", f"{name}: {exc}"
    if isinstance(e, FileNotFoundError):
        return "missing", str(e)
    if isinstance(e, PermissionError):
        return "permanent", f"permission denied: {e}"
    if isinstance(e, (TimeoutError, ConnectionError)):
        return "transient", str(e) or type(e).__name__
    if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
        return "transient", e.strerror or str(e)
    return "permanent", str(e) or type(e).__name__
