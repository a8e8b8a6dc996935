"""Unit tests for shadow_middleware._compare: decoding, JSON pointers and the tolerant diff."""

from __future__ import annotations

import gzip
import json
import math
import time
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shadow_middleware import Compare
from shadow_middleware._compare import MAX_GZIP_MEMBERS, compare_bodies, decode_body, escape_token, resolve
from shadow_middleware._config import parse_pointer

PAYLOAD = json.dumps({"prediction": 0.73, "label": "churn", "items": list(range(50))}).encode()


def js(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def cmp(doc_a: Any, doc_b: Any, **compare: Any) -> Any:
    return compare_bodies(Compare(**compare), js(doc_a), js(doc_b))


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    return c.compress(data) + c.flush()


def unescape(ptr: str) -> list[str]:
    """An independent RFC 6901 reading of a pointer (for checking the package's)."""
    assert ptr.startswith("/")
    return [t.replace("~1", "/").replace("~0", "~") for t in ptr[1:].split("/")]


# ---- decode_body ----------------------------------------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "x-gzip", "GZIP", " gzip "])
def test_decode_gzip(coding: str) -> None:
    assert decode_body(gzip.compress(PAYLOAD), coding, 1 << 20) == PAYLOAD


def test_decode_deflate_zlib_wrapped() -> None:
    body = zlib.compress(PAYLOAD)
    assert body != PAYLOAD
    assert decode_body(body, "deflate", 1 << 20) == PAYLOAD


def test_decode_deflate_raw() -> None:
    body = raw_deflate(PAYLOAD)
    with pytest.raises(zlib.error):
        zlib.decompress(body)  # really not zlib-wrapped
    assert decode_body(body, "deflate", 1 << 20) == PAYLOAD


@pytest.mark.parametrize("coding", ["", "identity", "IDENTITY"])
def test_decode_identity_returns_body(coding: str) -> None:
    assert decode_body(PAYLOAD, coding, 1 << 20) == PAYLOAD


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, br"])
def test_decode_unknown_coding_returns_body_as_is(coding: str) -> None:
    body = gzip.compress(PAYLOAD)
    assert decode_body(body, coding, 1 << 20) == body


def test_decode_empty_body() -> None:
    assert decode_body(b"", "gzip", 100) == b""


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"definitely not gzip", id="not-gzip"),
        pytest.param(b"\x1f\x8b\x08\x00garbage-after-magic", id="gzip-magic-then-garbage"),
        pytest.param(PAYLOAD, id="plain-json-labelled-gzip"),
    ],
)
def test_decode_corrupt_gzip_returned_as_is(body: bytes) -> None:
    assert decode_body(body, "gzip", 1 << 20) == body


def test_decode_gzip_with_bad_crc_returned_as_is() -> None:
    body = bytearray(gzip.compress(PAYLOAD))
    body[-6] ^= 0xFF  # inside the CRC32 trailer
    assert decode_body(bytes(body), "gzip", 1 << 20) == bytes(body)


def test_decode_truncated_gzip_returned_as_is() -> None:
    body = gzip.compress(PAYLOAD)[: len(gzip.compress(PAYLOAD)) // 2]
    assert decode_body(body, "gzip", 1 << 20) == body


def test_decode_deflate_corrupt_returned_as_is() -> None:
    body = b"\xff\xff not deflate at all"
    assert decode_body(body, "deflate", 1 << 20) == body


def test_decode_cap_is_applied_to_decompressed_size_gzip_bomb() -> None:
    size = 50 * 1024 * 1024
    c = zlib.compressobj(wbits=31)
    chunk = bytes(1024 * 1024)
    bomb = b"".join(c.compress(chunk) for _ in range(size // len(chunk))) + c.flush()
    assert len(bomb) < 1_000_000  # a small body ...
    out = decode_body(bomb, "gzip", 1000)
    assert out == bytes(1000)  # ... that decodes to only `cap` bytes


@pytest.mark.parametrize("make", [gzip.compress, zlib.compress, raw_deflate], ids=["gzip", "zlib", "raw"])
def test_decode_cap_truncates_each_coding(make: Any) -> None:
    coding = "gzip" if make is gzip.compress else "deflate"
    assert decode_body(make(PAYLOAD), coding, 17) == PAYLOAD[:17]


def test_decode_cap_larger_than_body_returns_everything() -> None:
    assert decode_body(gzip.compress(PAYLOAD), "gzip", len(PAYLOAD) * 10) == PAYLOAD


def test_decode_gzip_members_up_to_the_bound_are_concatenated() -> None:
    pieces = [js({"part": i}) for i in range(MAX_GZIP_MEMBERS)]
    body = b"".join(gzip.compress(p) for p in pieces)
    assert decode_body(body, "gzip", 1 << 20) == b"".join(pieces)


def test_decode_gzip_more_members_than_the_bound_is_corrupt() -> None:
    pieces = [js({"part": i}) for i in range(MAX_GZIP_MEMBERS + 1)]
    body = b"".join(gzip.compress(p) for p in pieces)
    assert gzip.decompress(body) == b"".join(pieces)  # valid gzip, all the same ...
    assert decode_body(body, "gzip", 1 << 20) == body  # ... but treated as corrupt: raw bytes


def test_decode_many_empty_gzip_members_costs_little_cpu() -> None:
    # Issue 18: 1 MiB of 52,428 empty gzip members cost ~1 s of CPU per answer.
    empty = gzip.compress(b"")
    bomb = empty * ((1 << 20) // len(empty))
    assert gzip.decompress(bomb) == b""
    start = time.process_time()
    out = decode_body(bomb, "gzip", 1 << 20)
    cpu = time.process_time() - start
    assert out == bomb  # corrupt: compared as it came
    assert cpu < 0.05, f"decode_body took {cpu * 1000:.0f} ms of CPU"


# ---- compare_bodies: fields -----------------------------------------------------------


def test_fields_list_compares_only_those_fields() -> None:
    a = {"score": 0.5, "label": "x", "id": "1"}
    b = {"score": 0.5, "label": "y", "id": "2"}
    d = cmp(a, b, fields=["/score"])
    assert (d.count, d.paths) == (0, [])
    d = cmp(a, b, fields=["/score", "/label"])
    assert (d.count, d.paths) == (1, ["/label"])


def test_fields_mapping_primary_to_candidate() -> None:
    primary = {"score": 0.9, "label": "churn"}
    candidate = {"out": {"p": 0.9, "class": "stay"}}
    d = cmp(primary, candidate, fields={"/score": "/out/p", "/label": "/out/class"})
    assert d.count == 1
    assert d.paths == ["/label"]  # reported under the primary pointer


def test_field_missing_on_one_side_is_a_diff() -> None:
    assert cmp({"a": 1}, {"b": 1}, fields=["/a"]).count == 1
    assert cmp({"b": 1}, {"a": 1}, fields=["/a"]).count == 1


def test_field_missing_on_both_sides_is_equal() -> None:
    d = cmp({"x": 1}, {"y": 2}, fields=["/a", "/deep/er"])
    assert d.count == 0


def test_field_null_versus_missing_is_a_diff() -> None:
    assert cmp({"a": None}, {}, fields=["/a"]).count == 1


@pytest.mark.parametrize(
    ("a", "b", "abs_tol", "rel_tol"),
    [
        (0.5, 0.5000001, 0.0, 0.0),
        (0.5, 0.5000001, 1e-6, 0.0),
        (0.5, 0.51, 1e-6, 0.0),
        (100.0, 101.0, 0.0, 0.02),
        (100.0, 103.0, 0.0, 0.02),
        (0.0, 1e-12, 0.0, 0.5),
        (1e-9, 2e-9, 1e-8, 0.0),
        (-3.0, 3.0, 1.0, 0.5),
    ],
)
def test_tolerances_follow_math_isclose(a: float, b: float, abs_tol: float, rel_tol: float) -> None:
    expected = 0 if math.isclose(a, b, abs_tol=abs_tol, rel_tol=rel_tol) else 1
    d = cmp({"s": a}, {"s": b}, fields=["/s"], abs_tol=abs_tol, rel_tol=rel_tol)
    assert d.count == expected


@pytest.mark.parametrize(
    ("a", "b", "threshold"),
    [
        (0.55, 0.9, 0.5),
        (0.45, 0.9, 0.5),
        (0.5, 0.49999, 0.5),
        (0.5, 0.5, 0.5),
        (0.1, 0.4, 0.5),
        (3, 7, 5),
        (-1, 1, 0),
    ],
)
def test_threshold_compares_decisions(a: float, b: float, threshold: float) -> None:
    expected = 0 if (a >= threshold) == (b >= threshold) else 1
    d = cmp({"s": a}, {"s": b}, fields=["/s"], threshold=threshold)
    assert d.count == expected


def test_threshold_examples_from_contract() -> None:
    assert cmp({"s": 0.55}, {"s": 0.9}, fields=["/s"], threshold=0.5).count == 0
    assert cmp({"s": 0.45}, {"s": 0.9}, fields=["/s"], threshold=0.5).count == 1


def test_threshold_overrides_tolerance() -> None:
    # 0.49 and 0.51 are within abs_tol but on opposite sides of the threshold.
    assert cmp({"s": 0.49}, {"s": 0.51}, fields=["/s"], threshold=0.5, abs_tol=0.1).count == 1


@pytest.mark.parametrize(
    ("a", "b"),
    [(True, 1), (1, True), (False, 0), (0.0, False), ("1", 1), (None, 0), (None, False), ([], {})],
)
def test_different_json_types_differ(a: Any, b: Any) -> None:
    assert cmp({"v": a}, {"v": b}).count == 1
    assert cmp({"v": a}, {"v": b}, fields=["/v"]).count == 1


def test_bool_vs_int_differs_even_with_tolerance() -> None:
    assert cmp({"v": True}, {"v": 1}, abs_tol=10.0).count == 1


@pytest.mark.parametrize(("a", "b"), [(1, 1.0), (0, 0.0), (-7, -7.0), (10**15, 1e15)])
def test_int_and_float_of_same_value_are_equal(a: int, b: float) -> None:
    assert cmp({"v": a}, {"v": b}).count == 0
    assert cmp({"v": b}, {"v": a}, fields=["/v"]).count == 0


def test_distinct_large_ints_differ() -> None:
    a, b = 2**53 + 1, 2**53
    assert a != b
    assert cmp({"id": a}, {"id": b}).count == 1


def test_huge_ints_do_not_crash() -> None:
    assert cmp({"v": 10**400}, {"v": 10**400 + 1}).count == 1


def test_identical_bodies_with_nan_are_equal() -> None:
    body = b'{"score": NaN}'
    assert compare_bodies(Compare(), body, body).count == 0


# ---- compare_bodies: whole body -------------------------------------------------------


def test_whole_body_equal_documents() -> None:
    doc = {"a": [1, {"b": "c"}], "d": None, "e": True}
    # Key order and spacing do not matter: the comparison is structural.
    other = json.dumps(doc, indent=2, sort_keys=True).encode()
    assert compare_bodies(Compare(), js(doc), other).count == 0


def test_whole_body_reports_every_differing_leaf() -> None:
    a = {"x": 1, "y": {"z": "p", "w": [1, 2]}, "only_a": 0}
    b = {"x": 2, "y": {"z": "p", "w": [1, 3]}, "only_b": 0}
    d = cmp(a, b)
    assert sorted(d.paths) == sorted(["/x", "/y/w/1", "/only_a", "/only_b"])
    assert d.count == 4


def test_whole_body_ignore_pointers() -> None:
    a = {"id": "r1", "meta": {"ts": 1, "model": "m"}, "a/b": 1, "t~x": 2, "score": 0.5}
    b = {"id": "r2", "meta": {"ts": 2, "model": "m"}, "a/b": 9, "t~x": 8, "score": 0.5}
    ignore = ["/id", "/meta/ts", "/a~1b", "/t~0x"]
    assert cmp(a, b, ignore=ignore).count == 0
    # Each ignore pointer removes exactly one difference.
    for i in range(len(ignore)):
        assert cmp(a, b, ignore=ignore[:i] + ignore[i + 1 :]).count == 1
    assert cmp(a, b).count == len(ignore)


def test_ignore_removes_whole_subtree_and_missing_keys() -> None:
    a = {"debug": {"x": 1, "y": [1, 2, 3]}, "v": 1}
    b = {"v": 1}
    assert cmp(a, b).count == 1
    assert cmp(a, b, ignore=["/debug"]).count == 0


def test_ignore_inside_list_elements() -> None:
    a = {"items": [{"id": 1, "p": 0.1}, {"id": 2, "p": 0.2}]}
    b = {"items": [{"id": 9, "p": 0.1}, {"id": 2, "p": 0.3}]}
    d = cmp(a, b, ignore=["/items/0/id"])
    assert d.paths == ["/items/1/p"]


def test_diff_paths_escape_keys() -> None:
    d = cmp({"a/b": 1, "c~d": 1}, {"a/b": 2, "c~d": 2})
    assert sorted(d.paths) == ["/a~1b", "/c~0d"]


@pytest.mark.parametrize(("la", "lb"), [(3, 1), (1, 3), (0, 4), (5, 5)])
def test_list_length_differences(la: int, lb: int) -> None:
    a, b = list(range(la)), list(range(lb))
    d = cmp({"l": a}, {"l": b})
    assert d.count == abs(la - lb)
    assert sorted(d.paths) == sorted(f"/l/{i}" for i in range(min(la, lb), max(la, lb)))


def test_diff_paths_are_capped_but_count_is_full() -> None:
    n = 57
    a = {"v": list(range(n))}
    b = {"v": [x + 1 for x in range(n)]}
    d = cmp(a, b)
    assert d.count == n
    assert len(d.paths) == 20
    assert len(set(d.paths)) == 20
    assert set(d.paths) <= {f"/v/{i}" for i in range(n)}


def test_top_level_scalar_difference_has_root_path() -> None:
    d = compare_bodies(Compare(), b"1", b"2")
    assert (d.count, d.paths) == (1, [""])


# ---- compare_bodies: unparseable / non-JSON -------------------------------------------


@pytest.mark.parametrize("candidate", [b"<html>oops</html>", b"", b'{"a": ', b"\xff\xfe"])
def test_candidate_unparseable(candidate: bytes) -> None:
    d = compare_bodies(Compare(fields=["/a"]), js({"a": 1}), candidate)
    assert d.candidate_unparseable is True
    assert d.count == 1
    assert len(d.paths) == 1


def test_parseable_candidate_is_not_flagged() -> None:
    assert compare_bodies(Compare(), js({"a": 1}), js({"a": 2})).candidate_unparseable is False


@pytest.mark.parametrize(
    ("primary", "candidate"),
    [
        (b"plain text", b"plain text"),
        (b"plain text", b"plain texT"),
        (b"", b""),
        (b"", b"x"),
        (b"<p>1</p>", js({"a": 1})),
        (b"\x00\x01binary", b"\x00\x01binary"),
    ],
)
def test_non_json_primary_compares_bytes(primary: bytes, candidate: bytes) -> None:
    d = compare_bodies(Compare(fields=["/a"]), primary, candidate)
    assert d.count == (0 if primary == candidate else 1)
    assert d.candidate_unparseable is False
    assert d.values == []


# ---- record_values --------------------------------------------------------------------


def test_record_values_suffix_and_values() -> None:
    primary = {"out": {"score": 0.7, "label": "a"}, "n": 3}
    candidate = {"out": {"score": 0.8, "label": "a"}, "n": 3}
    fields = ["/out/score", "/out/label", "/n"]
    d = cmp(primary, candidate, fields=fields)
    expected = []
    for f in fields:
        suffix = f[1:].replace("/", ".")
        keys = f[1:].split("/")
        p: Any = primary
        c: Any = candidate
        for k in keys:
            p, c = p[k], c[k]
        expected.append((suffix, p, c))
    assert d.values == expected
    assert d.values[0][0] == "out.score"


def test_record_values_mapping_uses_primary_pointer_for_suffix() -> None:
    d = cmp({"score": 0.1}, {"result": {"p": 0.2}}, fields={"/score": "/result/p"})
    assert d.values == [("score", 0.1, 0.2)]


def test_record_values_truncates_strings() -> None:
    long_a, long_b = "a" * 300, "b" * 1000
    d = cmp({"s": long_a}, {"s": long_b}, fields=["/s"])
    assert d.values == [("s", long_a[:256], long_b[:256])]


def test_record_values_non_scalars_and_missing_are_none() -> None:
    d = cmp({"o": {"x": 1}, "l": [1]}, {"o": [1, 2], "l": None}, fields=["/o", "/l", "/gone"])
    assert d.values == [("o", None, None), ("l", None, None), ("gone", None, None)]


@pytest.mark.parametrize("value", [True, False, 0, -4, 2.5, ""])
def test_record_values_scalars_keep_type(value: Any) -> None:
    d = cmp({"v": value}, {"v": value}, fields=["/v"])
    assert len(d.values) == 1
    suffix, p, c = d.values[0]
    assert suffix == "v"
    assert type(p) is type(value) and p == value
    assert type(c) is type(value) and c == value


def test_record_values_false_records_nothing() -> None:
    d = cmp({"a": 1, "b": 2}, {"a": 2, "b": 2}, fields=["/a", "/b"], record_values=False)
    assert d.values == []
    assert d.count == 1


def test_whole_body_mode_records_no_values() -> None:
    assert cmp({"a": 1}, {"a": 2}).values == []


# ---- resolve --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ptr", "expected"),
    [
        ("/items/0", "a"),
        ("/items/2/k", 5),
        ("/m/a~1b", 1),
        ("/m/c~0d", 2),
        ("/m/", 3),
    ],
)
def test_resolve_present(ptr: str, expected: Any) -> None:
    doc = {"items": ["a", "b", {"k": 5}], "m": {"a/b": 1, "c~d": 2, "": 3}}
    assert resolve(doc, parse_pointer("p", ptr)) == expected


@pytest.mark.parametrize("ptr", ["/items/3", "/items/01", "/items/-", "/items/-1", "/nope", "/items/0/x"])
def test_resolve_missing_is_a_diff_against_present(ptr: str) -> None:
    doc = {"items": ["a", "b", {"k": 5}]}
    # A missing value differs from any present one and equals another missing one.
    d = compare_bodies(Compare(fields=[ptr]), js(doc), js(doc))
    assert d.count == 0
    d = compare_bodies(Compare(fields={ptr: "/items/0"}), js(doc), js(doc))
    assert d.count == 1


# ---- properties -----------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**18), max_value=10**18)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_docs = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=25,
)


@given(json_docs)
def test_property_document_equals_itself(doc: Any) -> None:
    body = js(doc)
    assert compare_bodies(Compare(), body, body).count == 0
    # A different serialisation of the same document is the same document.
    other = json.dumps(doc, indent=1, sort_keys=True).encode()
    assert compare_bodies(Compare(), body, other).count == 0


@given(json_docs, json_docs)
def test_property_whole_body_diff_count_is_symmetric(a: Any, b: Any) -> None:
    ab = compare_bodies(Compare(), js(a), js(b))
    ba = compare_bodies(Compare(), js(b), js(a))
    assert ab.count == ba.count
    assert (ab.count == 0) == (ba.count == 0)


keys = st.text(alphabet=st.sampled_from("ab/~01 "), max_size=6)


@given(st.lists(keys, min_size=1, max_size=6), st.integers() | st.text(max_size=4))
def test_property_escaped_pointer_round_trips(path: list[str], leaf: Any) -> None:
    doc: Any = leaf
    for key in reversed(path):
        doc = {key: doc, "~": "decoy", "/": "decoy"} if key not in ("~", "/") else {key: doc}
    ptr = "".join("/" + escape_token(k) for k in path)
    # The escaped pointer reads back as the original keys, by RFC 6901 rules ...
    assert unescape(ptr) == path
    tokens = parse_pointer("p", ptr)
    assert list(tokens) == path
    # ... and resolves to the leaf.
    assert resolve(doc, tokens) == leaf
