"""Run one example interactively: candidate + production, until Ctrl-C."""

from __future__ import annotations

import argparse
import time

from examples.launch import ROOT, start


def serve(example: str, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m examples.{example}_app")
    parser.add_argument("--port", type=int, default=8000, help="production app port")
    parser.add_argument("--candidate-port", type=int, default=5002)
    args = parser.parse_args(argv)
    logs = ROOT / "demo-out" / "logs"
    candidate = start(example, "candidate", {}, logs, port=args.candidate_port)
    candidate.wait_healthy()
    env = {"CANDIDATE_URL": f"http://127.0.0.1:{candidate.port}/predict_shadow"}
    production = start(example, "production", env, logs, port=args.port)
    try:
        production.wait_healthy()
        print(f"production (v1): http://127.0.0.1:{production.port}/predict")
        print(f"candidate  (v2): http://127.0.0.1:{candidate.port}/predict_shadow  (stats: /stats)")
        print(f"logs in {logs}; spans in shadow-spans.jsonl unless OTEL_EXPORTER_OTLP_ENDPOINT is set")
        print("try:")
        print(
            f"  curl -s -XPOST localhost:{production.port}/predict -H 'content-type: application/json' \\\n"
            '    -d \'{"customer_id": "C00001", "tenure_months": 2, "monthly_charges": 95.0, '
            '"support_calls": 4, "contract": "month-to-month", "has_fiber": true, '
            '"payment_electronic": true, "age": 30}\''
        )
        print("Ctrl-C to stop")
        while production.proc.poll() is None and candidate.proc.poll() is None:
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        production.stop()
        candidate.stop()
