"""Per-target TLS (issue 12, item 8): a CA bundle and a client certificate (mutual TLS),
against a real TLS server on 127.0.0.1 that requires a client certificate.

The CA, server and client certificates are made here with the ``openssl`` command line.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shadow_middleware import Shadow, ShadowConfig, ShadowTarget
from shadow_middleware._config import describe

from .rawserver import RawServer

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")

ANSWER = b'{"ok": true}'


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _signed(cwd: Path, ca: str, name: str, cn: str, ext: str) -> None:
    (cwd / f"{name}.ext").write_text(ext)
    _openssl(
        cwd, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}",
    )  # fmt: skip
    _openssl(
        cwd, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "other-ca"):
        _openssl(
            d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN={ca}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
    server_ext = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\n"
    _signed(d, "ca", "server", "127.0.0.1", server_ext)
    _signed(d, "ca", "client", "shadow-client", "extendedKeyUsage=clientAuth\nauthorityKeyIdentifier=keyid\n")
    (d / "client-both.pem").write_text((d / "client.pem").read_text() + (d / "client.key").read_text())
    (d / "garbage.pem").write_text("not a certificate\n")
    return {p.stem + p.suffix: str(p) for p in d.iterdir()}


def answer_every_request(srv: RawServer, conn: socket.socket) -> None:
    while srv.read_request(conn) is not None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER))


@pytest.fixture
def server(pki: dict[str, str]) -> Iterator[RawServer]:
    """Requires a client certificate signed by ``ca``; answers every request with ANSWER."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["server.pem"], pki["server.key"])
    ctx.load_verify_locations(pki["ca.pem"])
    ctx.verify_mode = ssl.CERT_REQUIRED
    s = RawServer(answer_every_request, tls=ctx)
    yield s
    s.close()


def run_engine(targets: list[ShadowTarget], n: int = 2) -> dict[str, dict[str, int]]:
    shadow = Shadow(ShadowConfig(targets=targets, routes=["POST /predict"], circuit_failures=0))
    body = b'{"a": 1}'
    try:
        for _ in range(n):
            tap = shadow.begin("POST /predict", "POST", "/predict", "", [], len(body))
            assert tap is not None
            tap.feed(body)
            tap.body_complete()
            tap.response_start(200, "")
            tap.response_body(ANSWER)
            tap.response_complete()
            tap.finish()
            assert shadow.flush(5)
        return shadow.stats_by_target()
    finally:
        shadow.close()


def test_mutual_tls_with_the_targets_own_ca_and_client_certificate(
    server: RawServer, pki: dict[str, str]
) -> None:
    base = f"https://127.0.0.1:{server.port}"
    mtls = ShadowTarget(
        "mtls",
        base_url=base,
        ca_file=pki["ca.pem"],
        client_cert=pki["client.pem"],
        client_key=pki["client.key"],
    )
    both = ShadowTarget("both", base_url=base, ca_file=pki["ca.pem"], client_cert=pki["client-both.pem"])
    no_cert = ShadowTarget("no-cert", base_url=base, ca_file=pki["ca.pem"])
    wrong_ca = ShadowTarget(
        "wrong-ca",
        base_url=base,
        ca_file=pki["other-ca.pem"],
        client_cert=pki["client.pem"],
        client_key=pki["client.key"],
    )
    system = ShadowTarget("system", base_url=base)
    stats = run_engine([mtls, both, no_cert, wrong_ca, system])
    assert stats["mtls"]["match"] == 2 and stats["both"]["match"] == 2
    for name in ("no-cert", "wrong-ca", "system"):
        assert stats[name]["error"] == 2, (name, stats[name])
    assert len(server.requests) == 4
    assert server.handshakes == 2  # keep-alive: one connection per working target, reused


def test_tls_settings_work_from_toml_and_env(tmp_path: Path, pki: dict[str, str]) -> None:
    toml = tmp_path / "shadow.toml"
    toml.write_text(
        'routes = ["POST /predict"]\n\n[[targets]]\nname = "v2"\nbase_url = "https://127.0.0.1:8443"\n'
        f'ca_file = "{pki["ca.pem"]}"\nclient_cert = "{pki["client.pem"]}"\nclient_key = "{pki["client.key"]}"\n'
    )
    from_file = ShadowConfig.from_toml(toml).targets[0]
    env = {
        "SHADOW_TARGETS": "v2",
        "SHADOW_TARGET_V2_BASE_URL": "https://127.0.0.1:8443",
        "SHADOW_TARGET_V2_CA_FILE": pki["ca.pem"],
        "SHADOW_TARGET_V2_CLIENT_CERT": pki["client.pem"],
        "SHADOW_TARGET_V2_CLIENT_KEY": pki["client.key"],
    }
    cfg = ShadowConfig.from_env(env)
    from_env = cfg.targets[0]
    for t in (from_file, from_env):
        assert (t.ca_file, t.client_cert, t.client_key) == (
            pki["ca.pem"],
            pki["client.pem"],
            pki["client.key"],
        )
    text = describe(cfg)
    assert f'ca_file = "{pki["ca.pem"]}"' in text and "client_key" in text
    bad = {**env, "SHADOW_TARGET_V2_CA_FILE": "/nonexistent.pem"}
    with pytest.raises(ValueError, match="ca_file"):
        ShadowConfig.from_env(bad)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"ca_file": "/nonexistent/ca.pem"}, "ShadowTarget.ca_file"),
        ({"ca_file": "garbage.pem"}, "ShadowTarget.ca_file"),
        ({"client_cert": "/nonexistent/c.pem"}, "ShadowTarget.client_cert"),
        ({"client_cert": "garbage.pem", "client_key": "client.key"}, "ShadowTarget.client_cert"),
        ({"client_cert": "client.pem", "client_key": "server.key"}, "ShadowTarget.client_key"),
        ({"client_cert": "client.pem", "client_key": "/nonexistent/k.pem"}, "ShadowTarget.client_key"),
        ({"client_cert": "client.pem"}, "ShadowTarget.client_cert"),  # no key in the file
        ({"client_key": "client.key"}, "ShadowTarget.client_key"),
        ({"ca_file": 5}, "ShadowTarget.ca_file"),
    ],
)
def test_tls_files_are_validated_at_construction(
    pki: dict[str, str], kwargs: dict[str, Any], field: str
) -> None:
    resolved = {k: pki.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=rf"^{field}: "):
        ShadowTarget("v2", base_url="https://127.0.0.1:8443", **resolved)


def test_tls_files_need_an_https_target(pki: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"^ShadowTarget\.ca_file: "):
        ShadowTarget("v2", base_url="http://127.0.0.1:8080", ca_file=pki["ca.pem"])


def test_repr_shows_the_tls_files(pki: dict[str, str]) -> None:
    t = ShadowTarget("v2", base_url="https://127.0.0.1:8443", ca_file=pki["ca.pem"])
    assert f"ca_file={pki['ca.pem']!r}" in repr(t) and "client_cert" not in repr(t)
