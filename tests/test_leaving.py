"""What leaves the process and what a candidate can cost us (issue 18, items 8-11), under real
uvicorn and gunicorn processes, in both isolations: credential-like headers stay home unless opted
in one by one, query values are never recorded on a span, a path that could leave the target's
base path is not shadowed (``skipped``, ``unsafe_path``) while the app still gets it untouched,
and a hostile gzip answer costs the app little CPU."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from urllib.parse import unquote

import pytest

from .conftest import ShadowServer, json_reply
from .servers import read_spans, request, server

KINDS = ["uvicorn", "gunicorn"]
ISOLATIONS = {
    "thread": {},
    "process": {"SHADOW_ISOLATION": "process"},  # tests/apps/spanfile.py:isolation()
}
BODY = json.dumps({"id": "c-1"}).encode()

# The three the review saw reach a candidate, then more names of the same families.
TOKENS = {
    "x-auth-token": "SECRET-auth-token",
    "x-amz-security-token": "SECRET-amz-token",
    "x-csrf-token": "SECRET-csrf-token",
}
MORE = {
    "x-xsrf-token": "SECRET-xsrf",
    "x-session-id": "SECRET-session",
    "x-hub-signature-256": "sha256=SECRET-signature",
    "x-goog-api-key": "SECRET-goog",
    "authorization": "Bearer SECRET-auth",
}
QUERY = "access_token=SECRET-QUERY&api_key=SECRET-QKEY"


@pytest.mark.parametrize("isolation", list(ISOLATIONS))
@pytest.mark.parametrize("kind", KINDS)
def test_token_headers_and_query_values_stay_home_unless_opted_in(
    kind: str, isolation: str, shadow_server: ShadowServer, tmp_path: Path
) -> None:
    shadow_server.reply = lambda req: json_reply({"prediction": 0.5})
    span_file = tmp_path / "spans.jsonl"
    env = {"SHADOW_URL": shadow_server.url + "/predict_shadow", "SPAN_FILE": str(span_file)}
    env.update(ISOLATIONS[isolation])
    headers = {"content-type": "application/json", **TOKENS, **MORE, "x-team": "ml"}
    with server(kind, env) as (port, _):
        status, _, _ = request(port, "POST", f"/predict?{QUERY}", BODY, headers)
        (span,) = read_spans(span_file, 1)
    assert status == 200
    (got,) = shadow_server.wait_for(1)
    assert not (set(TOKENS) | set(MORE)) & set(got.headers), got.headers
    assert got.headers["x-team"] == "ml"  # an ordinary header still goes
    assert got.path == f"/predict_shadow?{QUERY}"  # the candidate gets the request's query as sent
    # ... but the span records only its keys.
    assert span["attributes"]["url.full"] == (
        f"{shadow_server.url}/predict_shadow?access_token=REDACTED&api_key=REDACTED"
    )
    assert "SECRET" not in span_file.read_text()

    # The opt-in, one name at a time: those three go, the others still stay home.
    with server(kind, {**env, "SHADOW_FORWARD_HEADERS": ",".join(TOKENS)}) as (port, _):
        status, _, _ = request(port, "POST", "/predict", BODY, headers)
        read_spans(span_file, 2)
    assert status == 200
    opted = shadow_server.wait_for(2)[1]
    assert {name: opted.headers.get(name) for name in TOKENS} == TOKENS
    assert not set(MORE) & set(opted.headers), opted.headers


# Request-targets that could leave /base once a proxy or the candidate normalises them.
UNSAFE = [
    "/f/a/..%2f..%2fx",  # the review's: matched /f/{p:path}, went out as /base/f/a/..%2f..%2fx
    "/f/%2e%2e",  # and /base/f/%2e%2e
    "/f/a/%2E%2E/%2e%2e/x",
    "/f/a/%252e%252e/%252e%252e/x",  # twice encoded
    "/f/..;/x",  # a path parameter (Tomcat and Spring read ..;/ as ../)
    "/f/a/../../x",
]
SAFE = ["/f/a/b.json", "/f/a%2Fb", "/f/v1.2/x"]


@pytest.mark.parametrize("isolation", list(ISOLATIONS))
@pytest.mark.parametrize("kind", KINDS)
def test_paths_that_could_leave_the_base_path_are_skipped_and_reach_the_app_untouched(
    kind: str, isolation: str, shadow_server: ShadowServer, tmp_path: Path
) -> None:
    shadow_server.reply = lambda req: json_reply({"prediction": 1})
    span_file = tmp_path / "spans.jsonl"
    env = {
        "SHADOW_BASE_URL": shadow_server.url + "/base",
        "SHADOW_ROUTES": "POST /f/{p:path}",
        "SPAN_FILE": str(span_file),
        **ISOLATIONS[isolation],
    }
    # uvicorn's h11 parser keeps a fragment in raw_path and query_string (httptools drops it);
    # gunicorn drops it from PATH_INFO (a fragment that never reaches us is never sent: shadowed).
    fragments = ["/f/a#frag", "/f/b?x=1#frag"]
    unsafe = UNSAFE + (fragments if kind == "uvicorn" else [])
    safe = SAFE + (fragments if kind == "gunicorn" else [])
    extra = ("--http", "h11") if kind == "uvicorn" else ()
    with server(kind, env, *extra) as (port, _):
        answers = {target: request(port, "POST", target, BODY) for target in unsafe + safe}
        spans = read_spans(span_file, len(answers))
    # The app got every request line untouched (uvicorn: raw_path, without the query;
    # gunicorn: RAW_URI, the whole target).
    for target, (status, _, data) in answers.items():
        assert status == 200, (target, data)
        raw = json.loads(data)["raw"]
        assert raw == (target.split("?")[0] if kind == "uvicorn" else target), (target, raw)
    # One span each: the unsafe ones skipped, with the reason; the others compared.
    by_url: dict[str, list[str]] = {}
    for s in spans:
        a = s["attributes"]
        by_url.setdefault(a["shadow.outcome"], []).append(a.get("shadow.reason", ""))
    assert sorted(by_url) == ["match", "skipped"], by_url
    assert by_url["skipped"] == ["unsafe_path"] * len(unsafe)
    assert len(by_url["match"]) == len(safe)
    # Only the safe ones were sent, each below /base, no dot segment, no fragment.
    received = shadow_server.wait_for(len(safe))
    assert len(received) == len(safe)
    for r in received:
        path = r.path.split("?")[0]
        assert path.startswith("/base/f/") and "#" not in r.path, r.path
        assert not {".", ".."} & set(unquote(unquote(path)).split("/")), r.path


# ---- what a candidate can cost us (item 8) ----------------------------------------------------


def app_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_an_answer_of_many_empty_gzip_members_costs_the_app_little_cpu(
    shadow_server: ShadowServer, tmp_path: Path
) -> None:
    # 1 MiB of 52,428 empty gzip members: ~0.8 s of the app's CPU per answer before issue 18
    # (the shadow loop saturated, exchanges ended as timeouts); a few ms now, like any 1 MiB answer.
    empty = gzip.compress(b"")
    bomb = empty * ((1 << 20) // len(empty))
    shadow_server.reply = lambda req: (200, [("content-encoding", "gzip")], bomb)
    span_file = tmp_path / "spans.jsonl"
    env = {"SHADOW_URL": shadow_server.url + "/x", "SPAN_FILE": str(span_file), "SHADOW_TIMEOUT": "30"}
    answers = 10
    with server("uvicorn", env) as (port, proc):
        request(port, "GET", "/health")
        before = app_cpu_seconds(proc.pid)
        for i in range(answers):
            request(port, "POST", "/predict", json.dumps({"id": i}).encode())
        spans = read_spans(span_file, answers, timeout=120)
        cpu = app_cpu_seconds(proc.pid) - before
    # Corrupt, compared as it came: production answered JSON, the candidate did not.
    assert {(s["attributes"]["shadow.outcome"], s["attributes"].get("shadow.reason")) for s in spans} == {
        ("mismatch", "candidate_not_json")
    }
    assert cpu < 0.2 * answers, f"{cpu:.2f} s of app CPU for {answers} answers"
