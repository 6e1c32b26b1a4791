"""The one error vocabulary of hypersdk.

Every error a user can cause or meet is a HyperSDKError subclass carrying its
HTTP status and a stable machine-readable code. The API maps them to
``{"error": message, "code": code}`` in one place (api/errors.py); anything
else is a bug and becomes a logged 500.
"""

from __future__ import annotations


class HyperSDKError(Exception):
    status = 500
    code = "internal_error"
    headers: dict[str, str] = {}  # extra response headers (WWW-Authenticate, Retry-After)

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Unauthorized(HyperSDKError):
    status = 401
    code = "unauthorized"
    headers = {"WWW-Authenticate": 'Bearer realm="hypersdk"'}


class Forbidden(HyperSDKError):
    status = 403
    code = "forbidden"


class TooManyRequests(HyperSDKError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class InvalidRequest(HyperSDKError):
    """Bad input: malformed JSON, failed validation, unknown field."""

    status = 400
    code = "invalid_request"


class InvalidField(InvalidRequest):
    """A named field of the input is missing, of the wrong type or unknown."""

    code = "invalid_field"

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFound(HyperSDKError):
    status = 404
    code = "not_found"


class JobNotFound(NotFound):
    code = "job_not_found"

    def __init__(self, job_id: str):
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


class ScheduleNotFound(NotFound):
    code = "schedule_not_found"

    def __init__(self, schedule_id: str):
        super().__init__(f"schedule {schedule_id} not found")


class VMNotFound(NotFound):
    code = "vm_not_found"


class Conflict(HyperSDKError):
    status = 409
    code = "conflict"


class PayloadTooLarge(HyperSDKError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(HyperSDKError):
    status = 415
    code = "unsupported_media_type"


class Unavailable(HyperSDKError):
    """The daemon cannot serve this now (stopping, database down, feature off)."""

    status = 503
    code = "unavailable"


class JobLost(HyperSDKError):
    """Another node took this job over (this one lost its lease): its writes are refused, and this
    node does nothing more for it, clean-up included (the destination is the new owner's)."""

    status = 409
    code = "conflict"
    keep_destination = True

    def __init__(self, job_id: str):
        super().__init__(f"job {job_id} was taken over by another node")


class UpstreamError(HyperSDKError):
    """vCenter or libvirt answered with an error."""

    status = 502
    code = "upstream_error"


class VCenterLoginFailed(UpstreamError):
    code = "vcenter_login_failed"


class VCenterTLSError(UpstreamError):
    code = "vcenter_tls_error"


class UpstreamUnreachable(HyperSDKError):
    """vCenter or libvirt could not be reached (DNS, refused connection)."""

    status = 504
    code = "upstream_unreachable"


class UpstreamTimeout(HyperSDKError):
    status = 504
    code = "upstream_timeout"


class ConfigError(Exception):
    """The configuration file is wrong; start-up stops with this one line."""


class SecretsUnreadable(HyperSDKError):
    """Stored secrets that this node's key file cannot open."""

    code = "secrets_unreadable"
