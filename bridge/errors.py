"""Errors the engine raises; each adapter translates them into its own dialect.

Every error carries an HTTP status, a stable machine code, a message that names the offending
field, and the field itself (or None), so the common JSON shape
``{"error": code, "message": text, "field": field}`` can be built from any of them.
"""
from __future__ import annotations

import re
from typing import Any


# How much of a name the client made up (a job id, a file name, a key of its body) an answer repeats.
NAME_SHOWN = 80


def shorten(text: str, limit: int = 40) -> str:
    """A client's text cut to its first ``limit`` characters and "…": it may be megabytes (a string field), or as
    long as a URL may be (32 KiB)."""
    return text if len(text) <= limit else text[:limit] + "…"


def redact(url: str) -> str:
    """The URL with its user and password hidden, for messages, logs and /health."""
    return re.sub(r"://[^/?#@]*@", "://***@", url)


def quote(text: str, limit: int = 40) -> str:
    """``shorten``, quoted for a message."""
    return repr(shorten(text, limit))


class BridgeError(Exception):
    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "field": self.field}


class InvalidParameter(BridgeError):
    status = 400
    code = "invalid_parameter"

    def __init__(self, field: str, message: str) -> None:
        # a field may be a key the client made up: megabytes, echoed in every answer that names it
        field = shorten(field, NAME_SHOWN)
        # The field is repeated in the text because many clients only show the message.
        text = message if field and field in message else f"{field}: {message}" if field else message
        super().__init__(text, field=field or None)


class CostTooHigh(InvalidParameter):
    """A request asks for more work than BRIDGE_MAX_REQUEST_COST allows (pixels x steps x images)."""

    def __init__(self, terms: list[str], cost: int, limit: int, what: str | None = None) -> None:
        what = what or (" x ".join(terms) if terms else "the work asked for")
        super().__init__(terms[0] if terms else "parameters",
                         f"{what} = {cost:,} for this request; the limit is {limit:,} (BRIDGE_MAX_REQUEST_COST): ask "
                         f"for fewer steps, fewer images or smaller ones")
        self.terms = terms


class TooManyStreams(BridgeError):
    """One client already has as many `/events` streams open as it may (BRIDGE_MAX_STREAMS_PER_CLIENT)."""

    status = 429
    code = "too_many_streams"

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(f"this client already has {limit} event streams open (BRIDGE_MAX_STREAMS_PER_CLIENT); "
                         f"close one (a stream without `job` relays every job)")
        self.retry_after = retry_after


class TooManyJobs(BridgeError):
    """One client already has as many jobs waiting or running as it may (BRIDGE_MAX_JOBS_PER_CLIENT)."""

    status = 429
    code = "too_many_jobs"

    def __init__(self, limit: int, retry_after: float) -> None:
        super().__init__(f"this client already has {limit} jobs waiting or running (BRIDGE_MAX_JOBS_PER_CLIENT); "
                         f"retry when one has finished")
        self.retry_after = max(1, int(round(retry_after)))


class NotAvailable(BridgeError):
    """The value names something the backend does not have (a model, a sampler); `valid` lists what it has."""

    status = 400
    code = "not_available"

    def __init__(self, field: str, message: str, valid: list[str]) -> None:
        super().__init__(message, field=field)
        self.valid = list(valid)


class WorkflowNotFound(BridgeError):
    status = 404
    code = "workflow_not_found"

    def __init__(self, name: str) -> None:
        # the name comes from a URL path (8 KB) or a body field (MAX_TEXT): a 404 repeated all of it
        super().__init__(f"workflow {quote(name, NAME_SHOWN)} does not exist", field="workflow")
        self.name = name


class ResultGone(BridgeError):
    """The job exists but its stored result was removed (retention, or DELETE)."""

    status = 410
    code = "result_gone"


class FileNotFound(BridgeError):
    """The job exists but has no file of that name."""

    status = 404
    code = "file_not_found"


class JobNotFound(BridgeError):
    status = 404
    code = "job_not_found"
    def __init__(self, job_id: str, *, field: str = "job_id") -> None:
        super().__init__(f"job {quote(job_id, NAME_SHOWN)} does not exist", field=field)
        self.job_id = job_id


class Conflict(BridgeError):
    status = 409
    code = "conflict"


class PayloadTooLarge(BridgeError):
    status = 413
    code = "payload_too_large"


class QueueFull(BridgeError):
    status = 503
    code = "queue_full"

    def __init__(self, retry_after: float, message: str | None = None) -> None:
        super().__init__(message or f"the job queue is full; retry after {retry_after:.0f} s")
        # Whole seconds: Retry-After takes an integer.
        self.retry_after = max(1, int(round(retry_after)))


class BackendUnavailable(BridgeError):
    status = 503
    code = "backend_unavailable"


class WorkflowError(BridgeError):
    """A workflow or manifest on disk is wrong (raised at load time, names workflow and node)."""

    status = 500
    code = "workflow_invalid"
