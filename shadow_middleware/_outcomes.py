"""The one table of how a shadow exchange can end, shared by the runtime and the report.

Every eligible request ends in exactly one :class:`Outcome` per target; ``dropped`` and
``skipped`` carry a :class:`Reason`. These strings are the contract of the
``shadow.outcome`` / ``shadow.reason`` span attributes and of the ``shadow.requests``
metric: never rename one.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["OUTCOMES", "Outcome", "Reason"]


class Outcome(StrEnum):
    MATCH = "match"  # both answered, same status, no difference in the compared fields
    MISMATCH = "mismatch"  # both answered, and something compared differs
    ERROR = "error"  # the candidate failed: no answer, a bad answer, or a 5xx where the primary had none
    TIMEOUT = "timeout"  # the candidate did not answer within its target's timeout
    DROPPED = "dropped"  # a bound refused the work (queue, circuit, shutdown, a lost helper)
    SKIPPED = "skipped"  # nothing to compare (body over the cap, the primary failed, ...)


OUTCOMES: tuple[str, ...] = tuple(o.value for o in Outcome)


class Reason(StrEnum):
    """Why an exchange was ``dropped`` or ``skipped``, or what kind of ``mismatch`` it is
    (``shadow.reason``)."""

    # dropped
    QUEUE_FULL = "queue_full"
    CIRCUIT_OPEN = "circuit_open"
    SHUTDOWN = "shutdown"
    HELPER_RESTART = "helper_restart"  # isolation="process": the helper process was lost, or restarting
    CPU_BUDGET = "cpu_budget"  # shadow work in the app process is over ShadowConfig.cpu_budget
    # skipped
    BODY_TOO_LARGE = "body_too_large"
    BODY_NOT_READ = "body_not_read"
    CLIENT_DISCONNECT = "client_disconnect"
    PRIMARY_EXCEPTION = "primary_exception"
    PRIMARY_TIMEOUT = "primary_timeout"
    NO_RESPONSE = "no_response"
    INTERNAL_ERROR = "internal_error"
    # skipped when nothing else was compared, else on a mismatch: a Compare.fields pointer is
    # absent from both answers of a 2xx exchange (shadow.missing_fields names it). Not agreement.
    FIELD_MISSING = "field_missing"
    # the path could leave the target's base path (a dot segment, also percent-encoded, a "#"):
    # the app gets the request, no copy is sent
    UNSAFE_PATH = "unsafe_path"
    # mismatch
    CANDIDATE_NOT_JSON = "candidate_not_json"  # the primary answered JSON, the candidate did not
    STATUS_MISMATCH = "status_mismatch"  # the bodies agree (or were not compared), the statuses differ
