"""``report --clickhouse`` at scale (issue 20): N spans in the exporter's ``otel_traces`` (MergeTree, the
exporter's DDL) on ClickHouse's engine (chDB behind the tests' loopback HTTP endpoint,
``tests/chdb_server.py``, in its own process), and the report against it through clickhouse-connect.

``python -m bench.report_clickhouse --spans 1000000`` fills the table once (``INSERT ... SELECT FROM
numbers(N)`` on the server: attribute values as the exporter writes them, two targets, one route,
scores, statuses, correlation ids, two recorded inputs, start times 1 ms apart ending an hour ago),
then times the report ``--repeat`` times in a child process: wall time, the child's peak RSS
(``wait4``'s ``ru_maxrss``: the report's client process alone, not the server), and the bytes the server
sent back (the endpoint logs each response's size). Any further arguments go to the report
(``-- --reference ref.csv``). The table is kept in ``--dir`` for the next run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import clickhouse_connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.chdb_server import DDL  # noqa: E402

USER, PASSWORD = "bench", "bench"

FILL = """INSERT INTO otel.{table} (Timestamp, TraceId, SpanId, SpanName, SpanKind, ServiceName,
  SpanAttributes, Duration, StatusCode)
SELECT fromUnixTimestamp64Nano(toInt64({t0}) + toInt64(number) * 1000000),
  lower(hex(sipHash128(number))), lower(hex(sipHash64(number))), 'shadow POST /predict', 'Client',
  'churn-api',
  map('shadow.target', if(number % 2 = 0, 'churn-v2', 'churn-v3'),
      'shadow.route', 'POST /predict',
      'shadow.outcome', multiIf(r < 0.85, 'match', r < 0.95, 'mismatch', r < 0.98, 'error', 'timeout'),
      'shadow.primary.status_code', '200',
      'shadow.candidate.status_code', if(r < 0.98 AND r >= 0.95, '500', '200'),
      'shadow.primary.duration_ms', toString(round(2 + 30 * randCanonical(), 3)),
      'shadow.candidate.duration_ms', toString(round(3 + 50 * randCanonical(), 3)),
      'shadow.primary.body.churn_probability', toString(round(p, 4)),
      'shadow.candidate.body.churn_probability', toString(round(least(1, greatest(0, p + (r - 0.5) / 5)), 4)),
      'shadow.correlation_id', concat('req-', toString(number)),
      'shadow.request.body.tenure_months', toString(number % 72),
      'shadow.request.body.plan', ['basic', 'pro', 'team'][number % 3 + 1]),
  1000000, 'Unset'
FROM (SELECT number, randCanonical() AS r, randCanonical() AS p FROM numbers({n}))"""


def server(data: Path, log: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "chdb_server.py"), str(data), USER, PASSWORD],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "CHDB_SERVER_BYTES_LOG": str(log)},
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline().split()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", type=int, default=1_000_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/shadow-report-clickhouse"))
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("report_args", nargs="*")
    args = ap.parse_args()
    log = args.dir / "bytes.log"
    args.dir.mkdir(parents=True, exist_ok=True)
    proc, port = server(args.dir / "db", log)
    try:
        client = clickhouse_connect.get_client(
            host="127.0.0.1",
            port=port,
            username=USER,
            password=PASSWORD,
            compress=False,
            autogenerate_session_id=False,
            send_receive_timeout=3600,
        )
        table = f"otel_traces_{args.spans}"
        client.command("CREATE DATABASE IF NOT EXISTS otel")
        have = client.query(f"EXISTS TABLE otel.{table}").result_rows[0][0]
        if not have:
            client.command(DDL.format(db="otel", table=table))
            t0 = time.time_ns() - 3600 * 10**9 - args.spans * 1_000_000
            start = time.monotonic()
            client.command(FILL.format(table=table, t0=t0, n=args.spans))
            print(f"filled {args.spans:,} spans in {time.monotonic() - start:.1f} s", flush=True)
        rows, disk = client.query(
            "SELECT sum(rows), sum(bytes_on_disk) FROM system.parts WHERE database = 'otel' AND table = {t:String} "
            "AND active",
            parameters={"t": table},
        ).result_rows[0]
        print(f"table otel.{table}: {rows:,} rows, {disk / 1e6:,.0f} MB on disk")
        for _ in range(args.repeat):
            log.write_text("")
            cmd = [sys.executable, "-m", "shadow_middleware", "report", "--clickhouse"]
            cmd += [f"http://{USER}@127.0.0.1:{port}/otel", "--table", table, "--format", "json"]
            cmd += args.report_args
            start = time.monotonic()
            child = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=ROOT,
                env={**os.environ, "SHADOW_CLICKHOUSE_PASSWORD": PASSWORD},
            )
            out, err = child.communicate()
            wall = time.monotonic() - start
            sent = [int(x) for x in log.read_text().split()]
            rss = _rss()
            print(
                f"report: exit {child.returncode}, {wall:.1f} s wall, client peak RSS {rss}, "
                f"{sum(sent):,} bytes returned in {len(sent)} responses (largest {max(sent, default=0):,}); "
                f"output {len(out):,} bytes"
                + (f"; stderr: {err.decode()[-300:]}" if child.returncode == 2 else "")
            )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def _rss() -> str:
    import resource

    # communicate() reaped the child: its peak RSS is in RUSAGE_CHILDREN (the largest child so far; the
    # server is still running, so it is not counted)
    return f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MB"


if __name__ == "__main__":
    main()
