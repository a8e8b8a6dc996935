"""The framework-free engine: the public ``Shadow`` object.

Adapters (ASGI, WSGI) ask :meth:`Shadow.match` whether a request is on a shadowed route
and :meth:`Shadow.begin` for a per-request :class:`~._tap.Tap`, which they feed the bytes
they see pass. The engine decides sampling; the per-process machinery (dispatcher,
counters, telemetry hand-off) is its :class:`~._pipeline.Pipeline`.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from ._budget import PROCESS_PATH_COST, REQUEST_PATH_COST, meter
from ._config import RouteTable, ShadowConfig, ShadowTarget
from ._configfile import FALSE_WORDS, STRICT_ENV, TRUE_WORDS, ConfigErrors
from ._dispatch import TargetState
from ._isolation import HelperClient
from ._outcomes import OUTCOMES, Reason
from ._pipeline import Pipeline
from ._request import Request
from ._tap import RequestTap, header_value
from ._telemetry import Telemetry
from ._wire import MARKER, sample_point, unsafe_path, valid_method, valid_origin_form

__all__ = ["Shadow", "kill_switch_set", "strict_mode"]

logger = logging.getLogger("shadow_middleware")


class Shadow:
    """The shadow engine. Framework-free; shared by any number of middlewares.

    Parameters:
        config: a validated :class:`ShadowConfig`.
        tracer_provider: the OpenTelemetry ``TracerProvider`` to use; the global one
            when omitted.
        meter_provider: the OpenTelemetry ``MeterProvider`` to use; the global one
            when omitted.

    The background machinery (one daemon thread with its own event loop; with
    ``isolation="process"``, a helper process) starts on the first shadowed request in
    each process, so an engine built before a fork (gunicorn ``--preload``) starts fresh
    in every worker.

    With ``isolation="process"`` spans and metrics are recorded in the helper process,
    which cannot use providers built here: giving ``tracer_provider`` or ``meter_provider``
    then needs ``config.telemetry_setup`` (the function that configures them there).
    """

    def __init__(
        self, config: ShadowConfig, *, tracer_provider: Any = None, meter_provider: Any = None
    ) -> None:
        if not isinstance(config, ShadowConfig):
            raise ValueError(f"config: must be a ShadowConfig, got {type(config).__name__}")
        if config.isolation == "process" and config.telemetry_setup is None:
            for name, given in (("tracer_provider", tracer_provider), ("meter_provider", meter_provider)):
                if given is not None:
                    raise ValueError(
                        f"{name}: with isolation='process' spans and metrics are recorded in the "
                        "helper process, which cannot use a provider built here: set "
                        "telemetry_setup='package.module:function' (called there to configure "
                        "OpenTelemetry), or leave the providers out to configure it from OTEL_* "
                        "variables"
                    )
        self.config = config
        #: The configuration mistakes that left this engine off (see :meth:`from_env`).
        self.config_errors: tuple[str, ...] = ()
        self._telemetry = Telemetry(tracer_provider, meter_provider, link=config.span_placement == "link")
        self._routes = RouteTable(config.compiled_routes)
        # The kill switch wins over any configuration given in code.
        self._enabled = config.enabled and not kill_switch_set()
        self._closed = False
        self._close_lock = threading.Lock()
        self._rates = {t.name: t.sample_rate for t in config.targets}
        self._cpu_budget = config.cpu_budget
        self._path_cost = PROCESS_PATH_COST if config.isolation == "process" else REQUEST_PATH_COST
        self._pipeline = self._machinery()
        ref = weakref.ref(self)

        def after_fork() -> None:
            # A forked child starts with fresh locks, no dispatcher thread or helper (threads
            # do not survive fork; the parent's helper serves the parent only) and its own
            # counters.
            engine = ref()
            if engine is not None:
                if isinstance(engine._pipeline, HelperClient):
                    engine._pipeline.after_fork_in_child()
                engine._close_lock = threading.Lock()
                engine._pipeline = engine._machinery()

        os.register_at_fork(after_in_child=after_fork)
        _live.add(self)
        # atexit runs hooks last-registered-first: (re-)register ours now, so that it runs
        # before the exit hook of an SDK provider the app set up before this engine.
        atexit.unregister(_close_all_at_exit)
        atexit.register(_close_all_at_exit)

    def _machinery(self) -> Pipeline | HelperClient:
        machinery = self._machinery_for_mode()
        machinery.cpu_budget = self._cpu_budget
        return machinery

    def _machinery_for_mode(self) -> Pipeline | HelperClient:
        if self.config.isolation == "process":
            client = HelperClient(self.config, self._rates)
            # An engine collected without close() (a test suite's app) ends its pipeline in the
            # process's shared helper; the last one lets the helper exit.
            weakref.finalize(self, client.release)
            return client
        return Pipeline(self.config, self._telemetry, self._rates)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        base: Mapping[str, Any] | None = None,
        strict: bool | None = None,
        tracer_provider: Any = None,
        meter_provider: Any = None,
    ) -> Shadow:
        """An engine configured as :meth:`ShadowConfig.from_env` reads it, that never stops
        the app for a configuration mistake.

        Parameters:
            environ: the environment variables (``os.environ`` when ``None``).
            base: in-code defaults in the file's layout (as for ``ShadowConfig.from_env``).
            strict: raise the configuration's ``ValueError`` instead (fail fast, for CI and
                staging). ``None``: strict when ``SHADOW_STRICT`` says so (``1``, ``true``, ...).
            tracer_provider: OpenTelemetry ``TracerProvider`` (else the global one).
            meter_provider: OpenTelemetry ``MeterProvider`` (else the global one).

        A mistake (an unknown key or ``SHADOW_*`` variable, a bad value, an unreadable file)
        is logged once, at ERROR, naming every mistake; the engine returned is then off: it
        shadows nothing, :attr:`config_errors` lists the mistakes and :meth:`stats` counts
        them under ``config_errors``.
        """
        env = os.environ if environ is None else environ
        return runtime_engine(
            lambda: ShadowConfig.from_env(env, base=base), strict, env, tracer_provider, meter_provider
        )

    @classmethod
    def _off(cls, errors: tuple[str, ...]) -> Shadow:
        """An engine that shadows nothing because its configuration was wrong."""
        placeholder = ShadowConfig(
            targets=[ShadowTarget("unconfigured", url="http://127.0.0.1:9/")], routes=(), enabled=False
        )
        engine = cls(placeholder)
        engine.config_errors = errors
        return engine

    # ---- public API --------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Outcome counts over all targets in this process; an engine left off by a
        configuration mistake adds ``config_errors``, the number of mistakes."""
        totals = dict.fromkeys(OUTCOMES, 0)
        for per_target in self.stats_by_target().values():
            for outcome, count in per_target.items():
                totals[outcome] += count
        if self.config_errors:
            totals["config_errors"] = len(self.config_errors)
        return totals

    def stats_by_target(self) -> dict[str, dict[str, int]]:
        """Outcome counts per target in this process."""
        if self.config_errors:
            return {}  # the placeholder target is no target of the user's
        return self._pipeline.stats_by_target()

    @property
    def internal_errors(self) -> int:
        """Our own bugs caught (and logged) in this process; never raised into the app."""
        return self._pipeline.internal_errors

    def set_enabled(self, enabled: bool) -> None:
        """Turn shadowing on or off for the next request; safe from any thread."""
        self._enabled = bool(enabled)

    def set_sample_rate(self, target: str, rate: float) -> None:
        """Change one target's sample rate for the next request; safe from any thread."""
        if target not in self._rates:
            raise ValueError(f"target: unknown target {target!r}")
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            raise ValueError(f"sample_rate: must be in [0, 1], got {rate!r}")
        self._rates[target] = float(rate)
        self._pipeline.states[target].rate = float(rate)

    def set_cpu_budget(self, budget: float) -> None:
        """Change the CPU budget (a fraction of one core; 0: none) for the next request; safe
        from any thread. Over it, new shadows are ``dropped`` (``cpu_budget``)."""
        if isinstance(budget, bool) or not isinstance(budget, int | float) or not 0.0 <= budget <= 64.0:
            raise ValueError(f"cpu_budget: must be a fraction of one core in [0, 64], got {budget!r}")
        self._cpu_budget = float(budget)
        self._pipeline.cpu_budget = float(budget)

    @property
    def cpu_budget(self) -> float:
        """The CPU budget in force (a fraction of one core; 0: none)."""
        return self._cpu_budget

    @property
    def enabled(self) -> bool:
        return self._enabled and not self._closed

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every shadow job accepted so far has finished and its span ended,
        then force-flush the tracer and meter providers (the ones given, else the global
        ones), so the results have left the process.

        Returns False if that did not happen within ``timeout`` seconds. Callable from
        any thread except the dispatcher's own.
        """
        pipeline = self._pipeline
        if pipeline.pid != os.getpid():
            return True
        if isinstance(pipeline, HelperClient):
            return pipeline.flush(timeout)  # the helper flushes its own providers
        deadline = time.monotonic() + timeout
        done = pipeline.flush(timeout)
        return self._telemetry.force_flush(deadline - time.monotonic()) and done

    def close(self, timeout: float = 5.0) -> None:
        """Flush, then stop the background machinery and flush the providers. Idempotent.

        Jobs still running after ``timeout`` are cancelled and counted as ``dropped``
        (reason ``shutdown``). Afterwards requests pass through unshadowed.
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        pipeline = self._pipeline
        if isinstance(pipeline, HelperClient):
            if pipeline.pid == os.getpid():
                pipeline.close(timeout)
        elif pipeline.pid == os.getpid():
            deadline = time.monotonic() + timeout
            pipeline.close(timeout)
            # At least a moment for the exporters, even when draining used the whole budget.
            self._telemetry.force_flush(max(deadline - time.monotonic(), 0.5))

    # ---- adapter API ---------------------------------------------------------------

    def match(self, method: str, path: str) -> str | None:
        """The route pattern ``(method, path)`` falls under, if shadowing applies.

        A path that does not start with ``/`` (h11 and some adapters let one through) is
        never on a route (``RouteTable.match``): it is never shadowed."""
        if not self._enabled or self._closed:
            return None
        return self._routes.match(method, path)

    def begin(
        self,
        route: str,
        method: str,
        path: str,
        query: str,
        headers: list[tuple[str, str]],
        content_length: int | None,
    ) -> RequestTap | None:
        """Open an exchange for a request on ``route``; None when nothing is to be done.

        ``path`` is the percent-encoded request path and ``headers`` are
        ``(lower-case name, value)`` pairs. Never raises.

        A request whose method is not an RFC 9110 token or whose path and query are not a
        valid origin-form target (``/`` first; no space, control character or non-Latin-1
        text) is not shadowed: refused here, before any target is chosen, so it is not an
        eligible request and is not counted. One whose path could leave a target's base path
        (``_wire.unsafe_path``) is eligible and ``skipped`` (``unsafe_path``).
        """
        try:
            if not valid_method(method) or not valid_origin_form(path, query):
                return None
            for name, _ in headers:
                if name == MARKER:
                    return None  # a shadow request itself: never shadow it again
            pipeline = self._pipeline
            chosen, deferred = self._sample(headers)
            if not chosen:
                return None
            request = Request(route, method, path, query, headers)
            if not deferred:
                # A bound that would refuse anyway (the queue is full, the circuit is open, the
                # socket to the helper is full) refuses before the copy, not after it.
                if isinstance(pipeline, HelperClient):
                    early = Reason.QUEUE_FULL if pipeline.full() else None
                else:
                    early = pipeline.would_refuse(chosen)
                if early is not None:
                    pipeline.refuse(request, chosen, early)
                    return None
            budget = self._cpu_budget
            if budget > 0.0:
                cpu = meter()
                if not deferred and not cpu.admit(budget):
                    # Refused before any copy: a refusal costs a few µs, counted exactly.
                    pipeline.refuse(request, chosen, Reason.CPU_BUDGET)
                    return None
                cpu.charge(self._path_cost)
            tap = pipeline.open(request, chosen, deferred)
            if unsafe_path(path, query):
                tap.skip_all(Reason.UNSAFE_PATH)
                return None
            if content_length is not None and content_length > self.config.max_body_bytes:
                tap.skip_all(Reason.BODY_TOO_LARGE)
                return None
            return tap
        except Exception as exc:
            self.internal_error(exc)
            return None

    def _sample(self, headers: list[tuple[str, str]]) -> tuple[list[TargetState], bool]:
        """The targets a request with ``headers`` is copied to, and whether the choice waits
        for its body (a ``json:`` sample key: every target with a rate is kept for now)."""
        sample = self.config.sample_source
        key: str | None = None
        if sample is not None and sample.kind == "header":
            key = header_value(headers, sample.name)
        chosen: list[TargetState] = []
        deferred = False
        for state in self._pipeline.states.values():
            rate = state.rate
            if rate <= 0.0:
                continue
            if rate >= 1.0:
                chosen.append(state)
            elif sample is not None and sample.kind == "json":
                chosen.append(state)
                deferred = True  # decided once the body is here
            elif key is not None:
                if sample_point(key) < rate:
                    chosen.append(state)
            elif random.random() < rate:
                chosen.append(state)
        return chosen, deferred

    def internal_error(self, exc: BaseException) -> None:
        """Count and log one of our own bugs (adapters call it); never raises."""
        self._pipeline.error(exc)


# Every engine of this process, closed together at exit within one drain_timeout in total.
_live: weakref.WeakSet[Shadow] = weakref.WeakSet()


def _close_all_at_exit() -> None:
    engines = list(_live)
    if not engines:
        return
    deadline = time.monotonic() + max(e.config.drain_timeout for e in engines)
    for engine in engines:
        engine.close(max(deadline - time.monotonic(), 0.0))


def strict_mode(strict: bool | None, environ: Mapping[str, str] | None = None) -> bool:
    """``strict`` when given, else whether ``SHADOW_STRICT`` says on (``1``, ``true``, ...)."""
    if strict is not None:
        return bool(strict)
    value = (os.environ if environ is None else environ).get(STRICT_ENV, "")
    return value.strip().lower() in TRUE_WORDS


def runtime_engine(
    read: Callable[[], ShadowConfig],
    strict: bool | None,
    environ: Mapping[str, str] | None,
    tracer_provider: Any,
    meter_provider: Any,
) -> Shadow:
    """The engine for a configuration read at run time (environment, TOML file,
    ``app.config``): ``read()``'s mistakes raise when strict, else they are logged once at
    ERROR and the engine returned is off (an instrumentation library never takes its host
    down)."""
    try:
        return Shadow(read(), tracer_provider=tracer_provider, meter_provider=meter_provider)
    except ValueError as exc:
        if strict_mode(strict, environ):
            raise
        errors = exc.errors if isinstance(exc, ConfigErrors) else tuple(str(exc).splitlines())
        log_config_errors(errors)
        return Shadow._off(errors)


def log_config_errors(errors: tuple[str, ...]) -> None:
    """One ERROR naming every mistake, and what to do."""
    count = f"{len(errors)} mistakes" if len(errors) > 1 else "1 mistake"
    logger.error(
        "shadow_middleware configuration error (%s); shadowing is OFF and every request passes "
        "through unshadowed:\n%s\nFix the configuration and restart (run `shadow-middleware "
        "check-config` in CI to catch this before a deploy); set SHADOW_STRICT=1 to make such a "
        "mistake fail the start-up instead",
        count,
        "\n".join(f"  {line}" for line in errors),
    )


def kill_switch_set() -> bool:
    """``SHADOW_ENABLED`` says off (``0``, ``false``, ``no``, ``off``)."""
    value = os.environ.get("SHADOW_ENABLED")
    return value is not None and value.strip().lower() in FALSE_WORDS
