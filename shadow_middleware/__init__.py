"""shadow_middleware: test a candidate model against live traffic, in process, at no cost to users.

Requests on configured routes flow to the production handler untouched; a bounded copy
is sent in the background to one or more shadow targets, and the comparison of both
answers is emitted as OpenTelemetry spans and metrics.
"""

from ._asgi import ShadowASGIMiddleware
from ._config import Compare, ShadowConfig, ShadowTarget
from ._engine import Shadow
from ._integrations import ShadowFlask, ShadowStatsApp
from ._version import __version__
from ._wsgi import ShadowWSGIMiddleware

__all__ = [
    "Compare",
    "Shadow",
    "ShadowASGIMiddleware",
    "ShadowConfig",
    "ShadowFlask",
    "ShadowStatsApp",
    "ShadowTarget",
    "ShadowWSGIMiddleware",
    "__version__",
]

__locals = locals()
for __name in __all__:
    if not __name.startswith("__"):
        # Present public names as living here, not in private modules (as httpx does).
        setattr(__locals[__name], "__module__", "shadow_middleware")
