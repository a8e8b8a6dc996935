"""The record of one finished shadow exchange, handed from the dispatcher to telemetry."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._compare import AttrValue


@dataclass(slots=True)
class Result:
    target: str
    route: str
    method: str
    url: str
    server_address: str
    server_port: int
    outcome: str = "skipped"  # an _outcomes.Outcome
    reason: str | None = None  # why dropped / skipped: an _outcomes.Reason
    primary_status: int | None = None
    candidate_status: int | None = None
    primary_ms: float | None = None
    candidate_ms: float | None = None
    candidate_server_ms: float | None = None  # the candidate's own time (Server-Timing)
    diff_count: int | None = None
    diff_paths: list[str] = field(default_factory=list)
    values: list[tuple[str, AttrValue | None, AttrValue | None]] = field(default_factory=list)
    correlation_id: str | None = None
    error_type: str | None = None
    candidate_truncated: bool = False
    # ShadowConfig.record_inputs found in the request body: (attribute suffix, scalar value)
    inputs: tuple[tuple[str, AttrValue], ...] = ()
    # With Compare.threshold: whether a thresholded decision differed (None: no number compared)
    decision_flip: bool | None = None
    # |primary - candidate| of the first of Compare.fields that is a number on both sides
    score_abs_diff: float | None = None
    # Compare.fields pointers absent from both answers (reason field_missing)
    missing_fields: list[str] = field(default_factory=list)
    # A coalesced span: this many refusals of one (target, route, reason) in one interval
    coalesced_count: int | None = None
