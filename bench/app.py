"""An example app whose shadow engine uses the client ``BENCH_HTTP_CLIENT`` names.

For the benchmark's client-comparison arms only: ``BENCH_EXAMPLE`` (fastapi or flask) picks
the example, and the client is swapped before the app builds its engine.
"""

from __future__ import annotations

import importlib
import os

from bench.clients import use_client

use_client(os.environ.get("BENCH_HTTP_CLIENT", "mini"))
app = importlib.import_module(f"examples.{os.environ['BENCH_EXAMPLE']}_app.app").app
