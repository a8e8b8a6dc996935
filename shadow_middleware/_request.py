"""The request value: one request on a shadowed route, as the adapter saw it.

Made once, in ``Shadow.begin``, and read by every later step under one name: the tap (or, in
process isolation, the capture and the message to the helper, and the helper's tap), the
pipeline's refusals and early ends, the result and so the span and the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Request"]


@dataclass(slots=True)
class Request:
    """What every step after the adapter reads of a request; never changed once made (not
    ``frozen``: a frozen dataclass costs three times as much to make, on every request).
    It travels to the helper as :meth:`fields` and comes back as ``Request(*fields)``.

    Parameters:
        route: the route pattern it is on (``"POST /predict"``): the span's and metrics' route.
        method: the request method.
        path: the percent-encoded request path.
        query: the query string, without ``?``.
        headers: ``(lower-case name, value)`` pairs, as the adapter read them.
    """

    route: str
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]

    def fields(self) -> tuple[str, str, str, str, list[tuple[str, str]]]:
        """Its values in order, as plain data (what ``marshal`` writes)."""
        return (self.route, self.method, self.path, self.query, self.headers)
