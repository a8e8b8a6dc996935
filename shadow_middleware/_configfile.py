"""Configuration from a TOML file and ``SHADOW_*`` environment variables.

A :class:`ConfigLoader` is built from the three configuration classes (``ShadowConfig``,
``ShadowTarget`` and ``Compare``; this module does not import them). The file mirrors their
constructors one to one: top-level keys are the configuration's keywords, ``[compare]``
holds the comparison's and each ``[[targets]]`` table holds a target's. The allowed keys
are read from the constructors' signatures, so a new keyword is accepted here as soon as
it exists there.

Environment variables override the file:

* ``SHADOW_<KEY>`` for each top-level option (``SHADOW_MAX_QUEUE=50``); lists are
  comma-separated (``SHADOW_ROUTES="POST /predict,POST /score"``, an empty
  ``SHADOW_DROP_HEADERS`` forwards every header); booleans are ``1/0``, ``true/false``,
  ``yes/no``, ``on/off``; an empty value unsets an optional option (``SHADOW_SAMPLE_KEY=``).
* ``SHADOW_COMPARE_<KEY>`` for the comparison (``SHADOW_COMPARE_FIELDS="/a,/b"``, or
  ``"/prob=/score"`` for a renamed field).
* ``SHADOW_TARGET_<NAME>_<KEY>`` for a target, where ``NAME`` is its name upper-cased with
  every non-alphanumeric character turned into ``_`` (``churn-v2`` -> ``CHURN_V2``), and
  ``SHADOW_TARGET_<NAME>_HEADER_<HEADER>`` for one of its headers (``_`` -> ``-``).
* ``SHADOW_TARGETS="a,b"`` declares targets by name; one not in the file is created from
  its ``SHADOW_TARGET_<NAME>_*`` variables and needs ``_URL`` or ``_BASE_URL``.

Every error names where the bad value came from (the file, or the variable) and its key
path, then the constructor's own message when it is the one that refused the value:
``shadow.toml: targets[0].sample_rate: ShadowTarget.sample_rate: must be in [0, 1], got 1.5``.
Loading does not stop at the first error: every unknown key, unknown variable and bad value
is collected, and one :class:`ConfigErrors` (a ``ValueError``) lists them, one per line.

This module reads the sources and layers them; the rest of the work is done by one module a
concern: ``_configenv`` (the variables' names and values), ``_configbuild`` (coercing and
validating values, calling the constructors), ``_configerrors`` (errors that name their
source, suggestions), ``_configtext`` (explaining a configuration: ``describe()``, ``data()``).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any, Generic

from . import _configtext
from ._configbuild import _C, Builder, Params
from ._configenv import (
    CONFIG_ENV,
    ENV_PREFIX,
    FALSE_WORDS,
    FOREIGN_ENV,
    STRICT_ENV,
    TRUE_WORDS,
    EnvReader,
)
from ._configerrors import ConfigErrors, _Where

# ENV_PREFIX and the others are defined in _configenv; the rest of the package reads them here.
__all__ = [
    "ENV_PREFIX",
    "FALSE_WORDS",
    "FOREIGN_ENV",
    "STRICT_ENV",
    "TRUE_WORDS",
    "ConfigErrors",
    "ConfigLoader",
]

# What an error names as the source of a value no file and no variable gave.
_ENV_SOURCE = "environment"
_BASE_SOURCE = "base"


class ConfigLoader(Generic[_C]):
    """Reads TOML files and ``SHADOW_*`` environments into configuration objects, and back.

    Parameters:
        config_cls: the top-level class (``ShadowConfig``). Its constructor takes the
            top-level keys, and the keywords ``targets`` (a list of ``target_cls``) and
            ``compare`` (a ``compare_cls``).
        target_cls: the class of each ``[[targets]]`` table (``ShadowTarget``); its
            constructor takes ``name`` and ``headers`` (a table of strings).
        compare_cls: the class of the ``[compare]`` table (``Compare``); its constructor
            takes ``fields`` (a list of JSON pointers, or a table of them).

    The allowed keys and the type of each value are read from the constructors' signatures.
    """

    def __init__(self, config_cls: type[_C], target_cls: type, compare_cls: type) -> None:
        params = Params.of(config_cls, target_cls, compare_cls)
        self._params = params
        self.config_params = params.config
        self.target_params = params.target
        self.compare_params = params.compare
        self._builder = Builder(params, config_cls, target_cls, compare_cls)
        self._env = EnvReader(params)

    # ----------------------------------------------------------------------- entry points

    def load_toml(self, path: str | os.PathLike[str]) -> _C:
        """Read the TOML file ``path`` into a configuration.

        Unknown keys, wrong types and values the constructors refuse raise one
        :class:`ConfigErrors` listing every one of them, one per line:
        ``"<path>: <key path>: <what is wrong>"``. An unreadable file or a TOML syntax error
        (with its line) is a ``ValueError`` on its own: nothing else can be checked then.
        """
        name = os.fspath(path)
        return self._build(_read_toml(name), _Where(name))

    def from_env(self, environ: Mapping[str, str], *, base: Mapping[str, Any] | None = None) -> _C:
        """Build a configuration from ``environ``, and the file its ``SHADOW_CONFIG`` names.

        Layers, each overriding the one before: ``base`` (in-code defaults, in the file's
        layout), the TOML file ``SHADOW_CONFIG`` names (its top-level keys replace ``base``'s,
        ``[compare]`` keys one by one, its ``[[targets]]`` replace ``base``'s), then the
        ``SHADOW_*`` variables of ``environ``. Without ``SHADOW_CONFIG`` the configuration
        comes from ``base`` and the environment alone. Neither ``environ`` nor ``base`` is
        modified. Bad values and unknown variables raise one :class:`ConfigErrors` listing
        each, naming the variable (or the file, or ``base``, that the bad value comes from).
        """
        return self.from_layers([("", environ)], base=base)

    def from_layers(
        self, layers: Sequence[tuple[str, Mapping[str, str]]], *, base: Mapping[str, Any] | None = None
    ) -> _C:
        """Like :meth:`from_env`, with several sets of ``SHADOW_*`` variables, each applied on
        top of the ones before it (all of them on top of the file).

        Parameters:
            layers: ``(label, variables)`` pairs, lowest precedence first. The file is the one
                the last layer with a non-empty ``SHADOW_CONFIG`` names. Errors about a layer's
                variables start with ``"<label>: "`` when the label is not empty
                (``("app.config", {...})``: ``app.config: SHADOW_MAX_QUEUE: ...``).
            base: in-code defaults, under the file (as for :meth:`from_env`).
        """
        path = None
        for _, variables in layers:
            path = variables.get(CONFIG_ENV) or path
        data: dict[str, Any] = dict(base or {})
        origins = {key: _BASE_SOURCE for key in data}
        source = _ENV_SOURCE
        if path is not None:
            source = path
            from_file = _read_toml(path)
            for key, value in from_file.items():
                lower = data.get(key)
                if key == "compare" and isinstance(lower, Mapping) and isinstance(value, Mapping):
                    for k in lower:
                        if k not in value:
                            origins[f"compare.{k}"] = _BASE_SOURCE
                    data[key] = {**lower, **value}
                else:
                    data[key] = value
                origins.pop(key, None)
        where = _Where(source, origins)
        for label, variables in layers:
            data = self._env.apply(data, variables, where, f"{label}: " if label else "")
        return self._build(data, where)

    def describe(self, config: _C) -> str:
        """``config`` as TOML, in the file's layout, every key included.

        Target header values are masked as ``"***"``; options that are not set (``None``)
        appear as comments. Loading the text as a file rebuilds ``config`` (but for the
        masked header values).
        """
        return _configtext.describe(self._params, config)

    def data(self, config: _C) -> dict[str, Any]:
        """``config`` in the file's layout as plain data (str, int, float, bool, list, dict),
        every value exact, target header values included (never log it).

        ``from_env({}, base=loader.data(config))`` rebuilds an equal configuration: this is
        how ``isolation="process"`` hands the configuration to its helper process. Options
        that are not set (``None``) are left out.
        """
        return _configtext.data(self._params, config)

    def _build(self, data: Any, where: _Where) -> _C:
        """The configuration ``data`` (the file's layout) describes (:meth:`Builder.build`)."""
        return self._builder.build(data, where)


def _read_toml(name: str) -> dict[str, Any]:
    try:
        with open(name, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ValueError(f"{name}: cannot read the file: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name}: not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
        if m:
            message = f"line {m[1]}, column {m[2]}: invalid TOML: {message[: m.start()]}"
        else:
            message = f"invalid TOML: {message}"
        raise ValueError(f"{name}: {message}") from exc
