"""``report --clickhouse URL``: the aggregate from a ClickHouse server, through clickhouse-connect.

``URL`` is ``http(s)://user@host:port/database``; the password comes from the environment variable
:data:`PASSWORD_ENV` only (never argv, where ``ps`` shows it, nor a log). Every query runs with
``readonly=1``; https verifies the server against ``--ca-file`` (or the system's CAs). What the server
cannot do is one line (:class:`ClickHouseError`, exit status 2): unreachable, wrong credentials, no such
table, a table without the exporter's columns.

clickhouse-connect is imported only here, and only when ``--clickhouse`` is given (the ``clickhouse``
extra: ``pip install 'shadow_middleware[clickhouse]'``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from .aggregate import Aggregate, ReportError, ReportOptions
from .sql import COLUMNS, ExternalTable, SpanFilter, identifier, sql_aggregate

__all__ = ["MISSING_CLIENT", "PASSWORD_ENV", "ClickHouseError", "Target", "clickhouse_aggregate", "parse_url"]

PASSWORD_ENV = "SHADOW_CLICKHOUSE_PASSWORD"
MISSING_CLIENT = (
    "--clickhouse needs clickhouse-connect (the 'clickhouse' extra): pip install "
    "'shadow_middleware[clickhouse]'"
)


class ClickHouseError(ValueError):
    """The server cannot give the report (the message is one line, without the password)."""


@dataclass
class Target:
    secure: bool
    host: str
    port: int
    user: str
    database: str

    def __str__(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.user}@{self.host}:{self.port}/{self.database}"


def parse_url(url: str) -> Target:
    """``http(s)://user@host:port/database`` (user default ``default``, port 8123/8443, database
    ``default``). Raises :class:`ClickHouseError` for anything else, and for a password in the URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ClickHouseError(f"--clickhouse: not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClickHouseError("--clickhouse must be http(s)://user@host:port/database")
    if parts.password is not None:
        raise ClickHouseError(f"--clickhouse: no password in the URL; set {PASSWORD_ENV} instead")
    if parts.query or parts.fragment:
        raise ClickHouseError("--clickhouse: no query or fragment in the URL")
    database = unquote(parts.path.strip("/")) or "default"
    identifier(database, "--clickhouse database")
    secure = parts.scheme == "https"
    return Target(
        secure,
        parts.hostname,
        port or (8443 if secure else 8123),
        unquote(parts.username or "default"),
        database,
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300]


def _explain(exc: BaseException, target: Target, table: str) -> ClickHouseError:
    text = str(exc)
    if "Code: 516" in text or "AUTHENTICATION_FAILED" in text or "Code: 192" in text:
        return ClickHouseError(
            f"{target}: authentication failed for user {target.user!r} (password from {PASSWORD_ENV})"
        )
    if "Code: 81" in text or "UNKNOWN_DATABASE" in text:
        return ClickHouseError(f"{target}: no database {target.database!r}")
    if "Code: 60" in text or "UNKNOWN_TABLE" in text:
        return ClickHouseError(f"{target}: no table {table!r} in database {target.database!r}")
    if "Code: 164" in text or "READONLY" in text:
        return ClickHouseError(f"{target}: the server refused a read-only query: {_one_line(exc)}")
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return ClickHouseError(
            f"{target}: the server's certificate is not trusted (give its CA with --ca-file)"
        )
    if "SSL" in text and target.secure:
        return ClickHouseError(f"{target}: TLS failed ({_one_line(exc)[:200]})")
    name = type(exc).__name__
    if name in ("OperationalError",) or isinstance(exc, OSError):
        return ClickHouseError(f"{target}: cannot reach the server ({_one_line(exc)[:200]})")
    return ClickHouseError(f"{target}: {name}: {_one_line(exc)}")


def clickhouse_aggregate(
    url: str,
    table: str,
    where: SpanFilter,
    options: ReportOptions,
    ca_file: str | None = None,
    timeout: float = 300.0,
) -> Aggregate:
    """The report's aggregate of the spans in ``table`` on the server at ``url``.

    Parameters: ``url`` as :func:`parse_url`; ``table`` the exporter's table (``otel_traces``); ``where``
    the time range and service; ``options`` the report's; ``ca_file`` the CA bundle that signs an https
    server's certificate; ``timeout`` seconds per query. Raises :class:`ClickHouseError`."""
    target = parse_url(url)
    name = identifier(table, "--table")
    try:
        import clickhouse_connect  # type: ignore[import-untyped, unused-ignore]
        from clickhouse_connect.driver.external import ExternalData  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        raise ClickHouseError(MISSING_CLIENT) from None
    # the client logs its errors (with URLs and query ids) before raising them: the report says one line
    log = logging.getLogger("clickhouse_connect")
    log.addHandler(logging.NullHandler())
    log.propagate = False
    password = os.environ.get(PASSWORD_ENV, "")
    try:
        client = clickhouse_connect.get_client(
            host=target.host,
            port=target.port,
            username=target.user,
            password=password,
            database=target.database,
            secure=target.secure,
            verify=True,
            ca_cert=ca_file,
            compress=False,
            connect_timeout=10,
            send_receive_timeout=timeout,
            autogenerate_session_id=False,
            settings={"readonly": 1},
        )
    except Exception as exc:
        raise _explain(exc, target, table) from None

    def run(sql: str, params: dict[str, Any], tables: list[ExternalTable]) -> Sequence[Sequence[Any]]:
        external = None
        for t in tables:
            data = "".join("\t".join(_tsv(v) for v in row) + "\n" for row in t.rows).encode()
            kwargs: dict[str, Any] = {
                "file_name": t.name,
                "data": data,
                "fmt": "TabSeparated",
                "structure": t.structure,
            }
            if external is None:
                external = ExternalData(**kwargs)
            else:
                external.add_file(**kwargs)
        result = client.query(sql, parameters=params, external_data=external, settings={"readonly": 1})
        rows: Sequence[Sequence[Any]] = result.result_rows
        return rows

    try:
        columns = run(
            "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String}",
            {"db": target.database, "t": table},
            [],
        )
        have = {str(r[0]) for r in columns}
        if not have:
            raise ClickHouseError(f"{target}: no table {table!r} in database {target.database!r}")
        missing = [c for c in COLUMNS if c not in have]
        if missing:
            raise ClickHouseError(
                f"{target}: table {table!r} lacks the exporter's column(s) {', '.join(missing)}: "
                "is it the Collector ClickHouse exporter's traces table?"
            )
        return sql_aggregate(run, f"{identifier(target.database, 'database')}.{name}", where, options)
    except (ClickHouseError, ReportError):
        raise
    except Exception as exc:
        raise _explain(exc, target, table) from None
    finally:
        client.close()


def _tsv(value: Any) -> str:
    """A value in TabSeparated (the escapes its parser undoes)."""
    text = str(value)
    if any(ch in text for ch in "\\\t\n\r\0"):
        text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
        text = text.replace("\0", "\\0")
    return text
