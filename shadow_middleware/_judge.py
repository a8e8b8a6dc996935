"""From a finished job to its :class:`Result`: which outcome, and what differs.

Where to add a comparison rule: the body diff itself is ``_compare.compare_bodies``
(fields, tolerances, thresholds); the choice of outcome from statuses and failures is
:func:`judge`, below.
"""

from __future__ import annotations

import logging

from ._compare import compare_bodies, decode_body
from ._config import ShadowConfig, ShadowTarget
from ._dispatch import Job
from ._outcomes import Outcome, Reason
from ._request import Request
from ._result import Result
from ._wire import ShadowURL, shadow_url

__all__ = ["early_result", "judge", "server_duration_ms", "unjudged_result", "warn_missing_fields"]

logger = logging.getLogger("shadow_middleware")


def _result(target: ShadowTarget, request: Request, url: ShadowURL) -> Result:
    return Result(target.name, request.route, request.method, url.full, target.host, target.port)


def early_result(target: ShadowTarget, request: Request, outcome: Outcome, reason: Reason) -> Result:
    """An exchange of ``request`` that ended before any shadow call (``skipped`` or ``dropped``)."""
    r = _result(target, request, shadow_url(target, request.path, request.query))
    r.outcome, r.reason = outcome, reason
    return r


def unjudged_result(job: Job) -> Result:
    """What is recorded when judging itself failed (one of our bugs)."""
    r = _result(job.state.target, job.tap.request, job.url)
    r.reason = Reason.INTERNAL_ERROR
    return r


def judge(job: Job, config: ShadowConfig) -> Result:
    """The outcome of a job whose candidate call has ended and whose primary answer is in
    (or given up on)."""
    r = _result(job.state.target, job.tap.request, job.url)
    r.correlation_id = job.tap.correlation_id
    r.inputs = job.tap.inputs
    primary = job.primary
    assert primary is not None
    if primary.status is not None:
        r.primary_status = primary.status
        r.primary_ms = primary.duration_ms
    candidate = job.candidate
    if candidate is not None:
        r.candidate_status = candidate.status
        r.candidate_ms = job.candidate_ms
        r.candidate_truncated = candidate.truncated
        r.candidate_server_ms = server_duration_ms(candidate.server_timing)
    if job.error == Reason.SHUTDOWN:
        r.outcome, r.reason = Outcome.DROPPED, Reason.SHUTDOWN
    elif job.error == "timeout":
        r.outcome, r.error_type = Outcome.TIMEOUT, "timeout"
    elif job.error is not None or candidate is None:
        r.outcome, r.error_type = Outcome.ERROR, job.error or "Error"
    elif primary.failure is not None or primary.status is None:
        r.outcome, r.reason = Outcome.SKIPPED, primary.failure or Reason.NO_RESPONSE
    elif candidate.status >= 500 and primary.status < 500:
        r.outcome, r.error_type = Outcome.ERROR, str(candidate.status)
    else:
        cap = config.max_response_bytes
        diff = compare_bodies(
            config.compare,
            decode_body(primary.body, primary.content_encoding, cap),
            decode_body(candidate.body, candidate.content_encoding, cap),
        )
        r.diff_count = diff.count
        r.diff_paths = diff.paths
        r.values = diff.values
        r.decision_flip = diff.flips > 0 if diff.decisions else None
        r.score_abs_diff = diff.score_abs_diff
        same_status = candidate.status == primary.status
        same = diff.count == 0 and same_status
        r.outcome = Outcome.MATCH if same else Outcome.MISMATCH
        if diff.missing and 200 <= primary.status < 300:
            # A compared field neither answer has: nothing was compared there, which is not
            # agreement (a typo in Compare.fields made a whole run "match"). An error answer
            # (4xx on both, say) need not carry the field, so only a 2xx primary counts.
            r.missing_fields = diff.missing
            r.reason = Reason.FIELD_MISSING
            if same:
                r.outcome = Outcome.SKIPPED  # nothing to compare; what differs stays a mismatch
        elif diff.candidate_unparseable:
            r.reason = Reason.CANDIDATE_NOT_JSON  # an HTML error page, say: worth telling apart
        elif diff.count == 0 and not same_status:
            r.reason = Reason.STATUS_MISMATCH  # the same body under another status (404, 503, ...)
    return r


def warn_missing_fields(result: Result, warned: set[str]) -> None:
    """Log one WARNING per ``Compare.fields`` pointer found absent from both answers, the
    first time ``result`` shows it (``warned``: the pointers already logged, per engine)."""
    for pointer in result.missing_fields:
        if pointer not in warned:
            warned.add(pointer)
            logger.warning(
                "shadow_middleware: compared field %r is absent from both answers (target %r, "
                "route %r): these exchanges are not counted as agreement (reason "
                "field_missing). Check compare.fields for a typo against the response body",
                pointer,
                result.target,
                result.route,
            )


def server_duration_ms(header: str) -> float | None:
    """The candidate's own time from a ``Server-Timing`` header (W3C Server Timing): the
    ``total`` metric's ``dur``, else ``app``'s, else the first metric that has a ``dur``.
    Anything unparsable is ignored (the header is the candidate's, hence hostile)."""
    if not header:
        return None
    durations: dict[str, float] = {}
    first: float | None = None
    for metric in header.split(","):
        name, *params = (part.strip() for part in metric.split(";"))
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() != "dur":
                continue
            try:
                dur = float(value.strip().strip('"'))
            except ValueError:
                break
            if dur >= 0 and dur == dur and dur != float("inf"):
                durations.setdefault(name.lower(), dur)
                first = dur if first is None else first
            break
    for preferred in ("total", "app"):
        if preferred in durations:
            return durations[preferred]
    return first
