"""Retries on transient registry faults: which faults, how long to wait, and how to say why.

A request is tried again after a 408/429/5xx answer or a broken connection (reset, closed
mid-response, timeout), with capped exponential backoff and jitter; a `Retry-After` header
(seconds or an HTTP-date) replaces the computed wait. The budget is bounded: `attempts` tries
in all, and a registry asking for a longer wait than `max_retry_after` gets an error at once
instead of a hung build. Refused connections, DNS failures and TLS failures are not retried
(a registry that is not there does not come back in seconds), nor is anything a retry cannot
change (4xx, a digest mismatch).
"""

from __future__ import annotations

import email.utils
import errno
import ssl
import time

import httpx

from pybuild.registry.options import RetryPolicy

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
__all__ = ["RETRY_STATUSES", "RetryPolicy", "describe_transport_error", "gave_up",
           "is_transient", "parse_retry_after"]


def parse_retry_after(value: str, *, now: float | None = None) -> float | None:
    """Seconds a `Retry-After` header asks to wait: delay-seconds or an HTTP-date (RFC 9110);
    None if absent or unreadable."""
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _causes(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in out:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def is_transient(exc: httpx.HTTPError | ssl.SSLError) -> bool:
    """A transport failure that a new attempt may not meet: a timeout, a reset, a connection
    closed mid-response. Not: connection refused, DNS failure, TLS failure."""
    causes = _causes(exc)
    if any(isinstance(c, ssl.SSLError) for c in causes):
        return False
    if isinstance(exc, httpx.TimeoutException):
        return True
    if isinstance(exc, httpx.ConnectError):
        # a reset during the handshake is transient; refused or unresolvable is not
        return any(isinstance(c, ConnectionResetError | ConnectionAbortedError)
                   for c in causes)
    return isinstance(exc, httpx.ReadError | httpx.WriteError | httpx.RemoteProtocolError
                      | httpx.CloseError)


def describe_transport_error(exc: httpx.HTTPError | ssl.SSLError, timeout: float) -> str:
    """What went wrong on the wire, in words, never empty (httpx's own text often is)."""
    causes = _causes(exc)
    text = str(exc).strip()
    if isinstance(exc, httpx.ReadTimeout):
        return f"timed out: no data for {timeout:g} s"
    if isinstance(exc, httpx.WriteTimeout):
        return f"timed out: could not send for {timeout:g} s"
    if isinstance(exc, httpx.ConnectTimeout):
        return f"timed out connecting ({min(30.0, timeout):g} s)"
    if isinstance(exc, httpx.PoolTimeout):
        return f"timed out waiting for a free connection ({timeout:g} s)"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({timeout:g} s)"
    reset = any(isinstance(c, ConnectionResetError) or
                (isinstance(c, OSError) and c.errno == errno.ECONNRESET) for c in causes)
    if reset:
        return "the connection was reset by the peer"
    if any(isinstance(c, BrokenPipeError) for c in causes):
        return "the connection was closed while sending"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the registry closed the connection mid-response" + (
            f" ({text})" if text else "")
    if isinstance(exc, httpx.ReadError):
        return "the connection broke while reading the response" + (
            f" ({text})" if text else "")
    if isinstance(exc, httpx.WriteError):
        return "the connection broke while sending the request" + (
            f" ({text})" if text else "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def gave_up(attempts: int) -> str:
    """The suffix of an error after retries: nothing when there was only one try."""
    return f" (gave up after {attempts} attempts)" if attempts > 1 else ""
