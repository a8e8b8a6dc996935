"""Serve tests.apps.wsgi_app under a WSGI server named on the command line, for
tests/test_wsgi_servers.py: ``python -m tests.apps.wsgi_serve wsgiref|werkzeug PORT``."""

from __future__ import annotations

import sys

from .wsgi_app import app


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "wsgiref":
        from wsgiref.simple_server import make_server

        with make_server("127.0.0.1", port, app) as httpd:
            httpd.serve_forever()
    elif kind == "werkzeug":
        from werkzeug.serving import run_simple

        run_simple("127.0.0.1", port, app, threaded=True)
    else:
        raise SystemExit(f"unknown server {kind!r}")


if __name__ == "__main__":
    main()
