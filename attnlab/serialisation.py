"""Saving and loading attnlab's JSON records: one place for formats, versions, atomic writes and checked reads.

Every saved result is a JSON object with a ``"format"`` key naming its kind (``"attnlab.result"``,
``"attnlab.headscores"``, ``"attnlab.circuit.v1"`` ...) and, for most kinds, a ``"format_version"`` integer. The
:class:`RecordFormat` of each kind lists its keys, the versions this attnlab reads and the loader that reads it; the
result types (:class:`~attnlab.results.PatchingResult`, :class:`~attnlab.heads.results.HeadScores`,
:class:`~attnlab.circuits.Circuit`, :class:`~attnlab.circuits.agreement.AgreementReport`,
:class:`~attnlab.circuits.compare.CircuitComparison`) save and load through :func:`write_record`,
:func:`load_record` and :func:`from_record`.

Writes are atomic: the JSON text is written to a temporary file in the target's folder and moved over the target
with :func:`os.replace`, so a failure mid-save leaves any existing file as it was and never a truncated one.

Reads fail with a :class:`~attnlab.errors.ResultFileError` (or the kind's subclass, e.g.
:class:`~attnlab.errors.CircuitFileError`) that names the file and what is wrong: missing, empty, binary, not JSON or
truncated, JSON of another shape, another attnlab kind (and which loader reads it), a newer or older format version,
missing or unexpected keys, or contents that do not make a valid result. A missing file raises
:class:`~attnlab.errors.ResultFileNotFoundError` (a ``FileNotFoundError`` too).

:func:`script_json` embeds a payload in an HTML ``<script>`` element so that no string in it can end the element.

This module imports only the standard library and :mod:`attnlab.errors`.
"""

import json
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from attnlab.errors import (
    AgreementFileError,
    AttnlabError,
    CircuitComparisonFileError,
    CircuitFileError,
    ResultFileError,
    ResultFileNotFoundError,
)

__all__ = [
    "AGREEMENT",
    "CIRCUIT",
    "CIRCUIT_COMPARISON",
    "COMPOSITION",
    "FORMATS",
    "HEADSCORES",
    "RESULT",
    "RETRIEVAL",
    "RecordFormat",
    "SINKS",
    "Saved",
    "check_record",
    "from_record",
    "load_record",
    "read_json",
    "script_json",
    "write_record",
    "write_text",
]

T = TypeVar("T")

_JSON_TYPES = {dict: "an object", list: "a list", tuple: "a list", str: "a string", bool: "a boolean",
               int: "a number", float: "a number", type(None): "null"}


@dataclass(frozen=True)
class RecordFormat:
    """One kind of saved record: its format name, the versions read, its keys and who reads it.

    Attributes:
        family: the kind's name without a version, e.g. ``"attnlab.result"`` or ``"attnlab.circuit"``.
        version: the format version this attnlab writes (and the newest it reads).
        what: the kind in words, used in messages (``"result"``, ``"circuit"`` ...).
        loader: the function that reads the kind, named for messages (``"attnlab.PatchingResult.load"``).
        required: keys every record must have (``format`` and ``format_version`` apart).
        optional: keys a record may have (older files may lack them; readers use defaults).
        types: JSON type(s) of some keys (``dict``, ``list``, ``str``, ``int``, ``float``, ``bool``,
            ``type(None)``), checked when the key is present.
        min_version: the oldest format version still read.
        version_in_name: the version is part of the format name (``"attnlab.circuit.v1"``) and the record has no
            ``format_version`` key.
        error: the :class:`~attnlab.errors.ResultFileError` subclass raised for this kind.
    """

    family: str
    version: int
    what: str
    loader: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    types: Mapping[str, tuple[type, ...]] = field(default_factory=dict)
    min_version: int = 1
    version_in_name: bool = False
    error: type[ResultFileError] = ResultFileError

    @property
    def name(self) -> str:
        """The value of the ``"format"`` key this attnlab writes (``"attnlab.result"``, ``"attnlab.circuit.v1"``)."""
        return f"{self.family}.v{self.version}" if self.version_in_name else self.family

    def header(self) -> dict:
        """The record's leading keys: ``{"format": ...}`` and, unless the version is in the name,
        ``{"format_version": ...}``."""
        return {"format": self.name} if self.version_in_name else {"format": self.name, "format_version": self.version}


_DICT, _LIST, _STR, _BOOL, _NONE = (dict,), (list,), (str,), (bool,), type(None)
_NUMBER = (int, float)

RESULT = RecordFormat(
    family="attnlab.result", version=1, what="result", loader="attnlab.PatchingResult.load",
    required=("analysis", "component", "direction", "dims", "values", "per_prompt", "labels", "index"),
    optional=("tokens", "prompt_tokens", "metric", "metric_description", "metric_label", "baselines", "model",
              "task", "settings", "complete", "layers_done", "baselines_per_prompt", "warnings"),
    types={"analysis": _STR, "component": _STR, "direction": _STR, "dims": _LIST, "values": (list, *_NUMBER, _NONE),
           "per_prompt": (list, *_NUMBER, _NONE), "labels": _DICT, "index": _DICT, "tokens": (list, _NONE),
           "prompt_tokens": (list, _NONE), "metric": _STR, "metric_description": _STR, "metric_label": _STR,
           "baselines": _DICT, "model": _DICT, "task": _DICT, "settings": _DICT, "complete": _BOOL,
           "layers_done": _LIST, "baselines_per_prompt": _DICT, "warnings": _LIST},
)
"""A :class:`~attnlab.results.PatchingResult` (``{"format": "attnlab.result", "format_version": 1, ...}``)."""

HEADSCORES = RecordFormat(
    family="attnlab.headscores", version=1, what="head-scores result", loader="attnlab.HeadScores.load",
    required=("kinds", "scores", "per_sequence", "definition"),
    optional=("example_tokens", "example_str_tokens", "example_patterns", "model", "task", "settings", "ablation",
              "prefix", "copying"),
    types={"kinds": _LIST, "scores": _LIST, "per_sequence": _LIST, "definition": _STR, "example_tokens": _LIST,
           "example_str_tokens": _LIST, "example_patterns": (list, _NONE), "model": _DICT, "task": _DICT,
           "settings": _DICT, "ablation": (dict, _NONE), "prefix": (dict, _NONE), "copying": (list, _NONE)},
)
"""A :class:`~attnlab.heads.results.HeadScores` (``{"format": "attnlab.headscores", "format_version": 1, ...}``)."""

CIRCUIT = RecordFormat(
    family="attnlab.circuit", version=1, what="circuit", loader="attnlab.circuits.Circuit.load",
    required=("model", "task", "edges"), optional=("selection", "provenance"),
    types={"model": _DICT, "task": _DICT, "edges": _LIST, "selection": _DICT, "provenance": _DICT},
    version_in_name=True, error=CircuitFileError,
)
"""A :class:`~attnlab.circuits.Circuit` (``{"format": "attnlab.circuit.v1", ...}``: the version is in the name)."""

AGREEMENT = RecordFormat(
    family="attnlab.agreement", version=1, what="agreement report",
    loader="attnlab.circuits.agreement.AgreementReport.load",
    required=("component", "direction", "n", "spearman", "pearson", "top_k", "top_k_recall", "points", "failures",
              "rel_threshold", "min_scale"),
    optional=("baselines", "metric"),
    types={"component": _STR, "direction": _STR, "n": (int,), "spearman": (*_NUMBER, _NONE),
           "pearson": (*_NUMBER, _NONE), "top_k": (int,), "top_k_recall": (*_NUMBER, _NONE), "points": _LIST,
           "failures": _LIST, "rel_threshold": _NUMBER, "min_scale": _NUMBER, "baselines": _DICT, "metric": _STR},
    error=AgreementFileError,
)
"""An :class:`~attnlab.circuits.agreement.AgreementReport` (``{"format": "attnlab.agreement", ...}``)."""

CIRCUIT_COMPARISON = RecordFormat(
    family="attnlab.circuit_comparison", version=1, what="circuit comparison",
    loader="attnlab.circuits.compare.CircuitComparison.load",
    required=("names", "heads_a", "heads_b"), optional=("roles_a", "roles_b", "summary"),
    types={"names": _LIST, "heads_a": _LIST, "heads_b": _LIST, "roles_a": (dict, _NONE), "roles_b": (dict, _NONE),
           "summary": _DICT},
    error=CircuitComparisonFileError,
)
"""A :class:`~attnlab.circuits.compare.CircuitComparison` (``{"format": "attnlab.circuit_comparison", ...}``; its
``summary`` is derived, written for readers and ignored on load)."""

DISSOCIATION = RecordFormat(
    family="attnlab.dissociation", version=1, what="dissociation result",
    loader="attnlab.dissociation.DissociationResult.load",
    required=("components", "layer", "head", "metrics", "metric_labels", "clean", "ablated", "kinds", "families",
              "settings"),
    optional=("prompts", "model", "items", "complete", "control_sets", "control_ablated"),
    types={"components": _LIST, "layer": _LIST, "head": _LIST, "metrics": _LIST, "metric_labels": _LIST,
           "clean": _LIST, "ablated": _LIST, "kinds": _LIST, "families": _LIST, "settings": _DICT, "prompts": _LIST,
           "model": _DICT, "items": _DICT, "complete": _BOOL, "control_sets": _LIST, "control_ablated": (list, _NONE)},
)
"""A :class:`~attnlab.dissociation.DissociationResult` (``{"format": "attnlab.dissociation", ...}``)."""

COMPOSITION = RecordFormat(
    family="attnlab.composition", version=1, what="composition-scores result",
    loader="attnlab.heads.CompositionScores.load",
    required=("modes", "scores", "baseline"), optional=("model", "settings"),
    types={"modes": _LIST, "scores": _LIST, "baseline": _LIST, "model": _DICT, "settings": _DICT},
)
"""A :class:`~attnlab.heads.composition.CompositionScores` (``{"format": "attnlab.composition", ...}``)."""

FORMATS: dict[str, RecordFormat] = {f.family: f for f in (RESULT, HEADSCORES, CIRCUIT, AGREEMENT, CIRCUIT_COMPARISON,
                                                          DISSOCIATION, COMPOSITION)}
"""Every kind of record attnlab writes, by family."""

SINKS = RecordFormat(
    family="attnlab.sinks", version=1, what="attention-sink analysis", loader="attnlab.heads.SinkAnalysis.load",
    required=("kinds", "scores", "per_sequence", "mass", "uniform", "position_fraction", "sinks", "tokens", "alpha",
              "query_fraction", "min_queries", "head_fraction"),
    optional=("str_tokens", "model", "task", "settings", "calibration"),
    types={"kinds": _LIST, "scores": _LIST, "per_sequence": _LIST, "mass": _LIST, "uniform": _LIST,
           "position_fraction": _LIST, "sinks": _LIST, "tokens": _LIST, "alpha": _NUMBER, "query_fraction": _NUMBER,
           "min_queries": (int,), "head_fraction": _NUMBER, "str_tokens": _LIST, "model": _DICT, "task": _DICT,
           "settings": _DICT, "calibration": (dict, _NONE)},
)
"""A :class:`~attnlab.heads.sinks.SinkAnalysis` (``{"format": "attnlab.sinks", "format_version": 1, ...}``)."""

RETRIEVAL = RecordFormat(
    family="attnlab.retrieval", version=1, what="retrieval-head scores", loader="attnlab.heads.RetrievalScores.load",
    required=("scores", "per_input", "accuracy", "depths", "lengths", "n_needle"),
    optional=("threshold", "needle_text", "model", "task", "settings", "ablation"),
    types={"scores": _LIST, "per_input": _LIST, "accuracy": _LIST, "depths": _LIST, "lengths": _LIST,
           "n_needle": (int,), "threshold": _NUMBER, "needle_text": _STR, "model": _DICT, "task": _DICT,
           "settings": _DICT, "ablation": (dict, _NONE)},
)
"""A :class:`~attnlab.heads.retrieval.RetrievalScores` (``{"format": "attnlab.retrieval", "format_version": 1,
...}``)."""

FORMATS.update({f.family: f for f in (SINKS, RETRIEVAL)})

_ABSENT = object()
_VERSIONED_NAME = re.compile(r"^(?P<family>.+)\.v(?P<version>\d+)$")


# -- messages -----------------------------------------------------------------------------------------------------
def _source(path: Path | None, fmt: RecordFormat) -> str:
    """How messages name what is read: the file, or the dictionary given to ``from_dict``."""
    if path is not None:
        return str(path)
    owner = fmt.loader.rsplit(".", 1)[0].rsplit(".", 1)[-1]
    return f"the dictionary given to {owner}.from_dict"


def _a(what: str) -> str:
    """``what`` with its indefinite article (``"a result"``, ``"an agreement report"``)."""
    return f"{'an' if what[0] in 'aeiou' else 'a'} {what}"


def _keys(keys) -> str:
    return ", ".join(repr(k) for k in sorted(keys, key=str))


def _json_type(value) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _fail(fmt: RecordFormat, path: Path | None, message: str, *, found: str | None = None) -> ResultFileError:
    return fmt.error(message, path=path, expected=fmt.name, found=found)


# -- reading ------------------------------------------------------------------------------------------------------
def _as_path(path, fmt: RecordFormat, verb: str) -> Path:
    if isinstance(path, (str, os.PathLike)) and not isinstance(path, bytes):
        return Path(path)
    raise fmt.error(f"cannot {verb} {_a(fmt.what)}: the path must be a str or pathlib.Path (got "
                    f"{type(path).__name__})", expected=fmt.name)


def read_json(path: str | os.PathLike, fmt: RecordFormat) -> Any:
    """Read and parse the JSON file at ``path``, expected to hold a ``fmt`` record.

    Args:
        path: the file.
        fmt: the kind expected (for messages and the error class).

    Returns:
        The parsed JSON value (any JSON type: :func:`check_record` checks its shape).

    Raises:
        ResultFileNotFoundError: no file at ``path``.
        ResultFileError: (``fmt.error``) a folder, unreadable, empty, binary (not UTF-8 text), or not valid JSON
            (e.g. truncated).
    """
    path = _as_path(path, fmt, "load")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ResultFileNotFoundError(f"no {fmt.what} file at {path}: the file does not exist", path=path,
                                      expected=fmt.name) from None
    except IsADirectoryError:
        raise _fail(fmt, path, f"cannot load {path}: it is a folder, not {_a(fmt.what)} file") from None
    except OSError as exc:
        raise _fail(fmt, path, f"cannot read {path}: {exc.strerror or exc}") from None
    if not raw.strip():
        raise _fail(fmt, path, f"{path} is empty{' (only whitespace)' if raw else ''}: not {_a(fmt.what)} file "
                               "(was a save interrupted, or the file truncated?)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _fail(fmt, path, f"{path} is a binary file, not {_a(fmt.what)} file (attnlab saves JSON text; it starts "
                               f"with {raw[:8]!r})") from None
    if "\x00" in text:
        raise _fail(fmt, path, f"{path} is a binary file, not {_a(fmt.what)} file (it contains NUL bytes; it starts "
                               f"with {raw[:8]!r})")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at_end = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")
        why = "it ends in the middle of the JSON: the file is truncated" if at_end else \
            f"{exc.msg}, line {exc.lineno} column {exc.colno}"
        raise _fail(fmt, path, f"{path} is not valid JSON, so not {_a(fmt.what)} file ({why})") from None
    except RecursionError:
        raise _fail(fmt, path, f"{path} is not {_a(fmt.what)} file (its JSON is nested too deeply)") from None


def _found_kind(name: str, record: Mapping) -> tuple[RecordFormat | None, object]:
    """(the known kind of format ``name``, its version) or (None, None)."""
    if name in FORMATS:  # a versioned name without its version (".v1") has version None
        return FORMATS[name], None if FORMATS[name].version_in_name else record.get("format_version")
    m = _VERSIONED_NAME.match(name)
    if m and m["family"] in FORMATS and FORMATS[m["family"]].version_in_name:
        return FORMATS[m["family"]], int(m["version"])
    return None, None


def check_record(record: Any, fmt: RecordFormat, *, path: str | os.PathLike | None = None) -> dict:
    """Check that ``record`` is a ``fmt`` record this attnlab reads: a JSON object of this kind and a supported
    version, with every required key, no unexpected key, and keys of the right JSON types.

    Args:
        record: the parsed JSON (or a dictionary given to ``from_dict``).
        fmt: the kind expected.
        path: the file it came from, named in messages (None: a dictionary).

    Returns:
        The record's content keys (``format`` and ``format_version`` removed), as a new dict.

    Raises:
        ResultFileError: (``fmt.error``) not a JSON object, no or a foreign ``format``, another attnlab kind (the
            message names its loader), a newer or older version, missing or unexpected keys, a key of the wrong
            type.
    """
    path = None if path is None else Path(path)
    src = _source(path, fmt)
    expected = f"expected format {fmt.name!r}, as written by {fmt.loader.rsplit('.', 1)[0]}.save"
    if not isinstance(record, Mapping):
        raise _fail(fmt, path, f"{src} is not an attnlab {fmt.what}: it holds {_json_type(record)}, not a JSON "
                               f"object ({expected})")
    name = record.get("format")
    if name is None:
        raise _fail(fmt, path, f"{src} is not an attnlab {fmt.what}: it has no 'format' key ({expected})")
    if not isinstance(name, str):
        raise _fail(fmt, path, f"{src} is not an attnlab {fmt.what}: its 'format' is {_json_type(name)} "
                               f"({expected})")
    kind, version = _found_kind(name, record)
    if kind is None:
        hint = " (an unknown attnlab kind: written by a newer attnlab?)" if name.startswith("attnlab.") else ""
        raise _fail(fmt, path, f"{src} is not an attnlab {fmt.what}: its format is {name!r}{hint} ({expected})",
                    found=name)
    if kind.family != fmt.family:
        raise _fail(fmt, path, f"{src} is an attnlab {kind.what} (format {name!r}), not {_a(fmt.what)}: load it with "
                               f"{kind.loader}", found=name)
    if kind.version_in_name and version is None:
        raise _fail(fmt, path, f"{src}: its format {name!r} has no version ({_a(fmt.what)} record has 'format': "
                               f"{fmt.name!r})", found=name)
    if not kind.version_in_name:
        if "format_version" not in record:
            raise _fail(fmt, path, f"{src} is missing the key 'format_version' ({_a(fmt.what)} record has "
                                   f"'format_version': {fmt.version})", found=name)
        if isinstance(version, bool) or not isinstance(version, int):
            raise _fail(fmt, path, f"{src}: 'format_version' must be an integer (got {version!r})", found=name)
    if version > fmt.version:
        raise _fail(fmt, path, f"{src} was written by a newer attnlab ({fmt.what} format {version}); this version "
                               f"reads {_range(fmt)}: upgrade attnlab (pip install -U attnlab)", found=name)
    if version < fmt.min_version:
        raise _fail(fmt, path, f"{src} is in an old or invalid {fmt.what} format ({version}); this version reads "
                               f"{_range(fmt)}", found=name)
    header = ("format",) if fmt.version_in_name else ("format", "format_version")
    content = {k: v for k, v in record.items() if k not in header}
    missing = [k for k in fmt.required if k not in content]
    if missing:
        raise _fail(fmt, path, f"{src} is not a complete {fmt.what}: it is missing the key"
                               f"{'s' if len(missing) > 1 else ''} {_keys(missing)}", found=name)
    unexpected = [k for k in content if k not in fmt.required and k not in fmt.optional]
    if unexpected:
        known = _keys((*fmt.required, *fmt.optional))
        raise _fail(fmt, path, f"{src} has unexpected key{'s' if len(unexpected) > 1 else ''} {_keys(unexpected)} "
                               f"for {_a(fmt.what)} (format {name!r}; its keys are {known})", found=name)
    for key, types in fmt.types.items():
        value = content.get(key, _ABSENT)
        if list in types:  # a dictionary built in memory (not read from JSON) may hold tuples
            types = (*types, tuple)
        if value is _ABSENT or (isinstance(value, types) and not (isinstance(value, bool) and bool not in types)):
            continue
        allowed = " or ".join(dict.fromkeys(_JSON_TYPES.get(t, t.__name__) for t in types))
        raise _fail(fmt, path, f"{src}: the key {key!r} of {_a(fmt.what)} must be {allowed} (got "
                               f"{_json_type(value)})", found=name)
    return content


def _range(fmt: RecordFormat) -> str:
    lo, hi = fmt.min_version, fmt.version
    return f"format {hi}" if lo == hi else f"formats {lo} to {hi}"


def from_record(record: Any, fmt: RecordFormat, build: Callable[[dict], T], *,
                path: str | os.PathLike | None = None) -> T:
    """Check ``record`` (:func:`check_record`) and build the object from its content keys.

    Args:
        record: the parsed JSON or a dictionary.
        fmt: the kind expected.
        build: makes the object from the content keys (``format`` and ``format_version`` removed); any error it
            raises (a ``KeyError``, ``TypeError``, ``ValueError``, an attnlab error from the class's own checks ...)
            is reported as a malformed record.
        path: the file it came from, named in messages.

    Returns:
        What ``build`` returns.

    Raises:
        ResultFileError: (``fmt.error``) as :func:`check_record`, or contents that do not make a valid object.
    """
    content = check_record(record, fmt, path=path)
    try:
        return build(content)
    except ResultFileError:
        raise
    except (AttnlabError, KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError,
            OverflowError) as exc:
        path = None if path is None else Path(path)
        why = f"missing key {exc}" if type(exc) is KeyError else (str(exc) or type(exc).__name__)
        raise _fail(fmt, path, f"{_source(path, fmt)} is not a valid {fmt.what}: {why}",
                    found=record.get("format")) from exc


def load_record(path: str | os.PathLike, fmt: RecordFormat, build: Callable[[dict], T]) -> T:
    """Read the ``fmt`` record at ``path`` (:func:`read_json`) and build the object (:func:`from_record`).

    Args:
        path: the file.
        fmt: the kind expected.
        build: makes the object from the record's content keys.

    Returns:
        What ``build`` returns.

    Raises:
        ResultFileNotFoundError: no file at ``path``.
        ResultFileError: (``fmt.error``) the file is not a readable ``fmt`` record; the message names the file and
            the problem.
    """
    path = _as_path(path, fmt, "load")
    return from_record(read_json(path, fmt), fmt, build, path=path)


# -- writing ------------------------------------------------------------------------------------------------------
def write_record(path: str | os.PathLike, record: dict, fmt: RecordFormat, *, indent: int | None = None,
                 allow_nan: bool = False) -> Path:
    """Write ``record`` (a ``fmt`` record, its ``format`` key first) as JSON to ``path``, atomically.

    The text is written to a temporary file in the same folder, flushed to disk, then moved over ``path``
    (:func:`os.replace`): a failure at any point leaves an existing file unchanged and removes the temporary file.
    An existing file's permissions are kept. The folder is not created.

    Args:
        path: the file to write.
        record: the JSON-serialisable record (``to_dict()``).
        fmt: its kind (the ``format`` key is checked against it).
        indent: JSON indentation (None: one line).
        allow_nan: write NaN and infinities as ``NaN``/``Infinity`` (not standard JSON); by default they fail.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ResultFileNotFoundError: the folder of ``path`` does not exist.
        ResultFileError: (``fmt.error``) ``path`` is a folder; the record cannot be written as JSON (NaN with
            ``allow_nan=False``, an object JSON cannot hold); the file cannot be written (permissions, disk full).
    """
    path = _as_path(path, fmt, "save")
    if record.get("format") != fmt.name:
        raise _fail(fmt, path, f"cannot save to {path}: the record's format is {record.get('format')!r}, not "
                               f"{fmt.name!r}")
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise ResultFileNotFoundError(f"cannot save the {fmt.what} to {path}: the folder {folder} {what}; create it "
                                      f"first (e.g. Path({str(folder)!r}).mkdir(parents=True))",
                                      path=path, expected=fmt.name)
    if path.is_dir():
        raise _fail(fmt, path, f"cannot save the {fmt.what} to {path}: it is a folder; give a file name")
    try:
        text = json.dumps(record, indent=indent, allow_nan=allow_nan)
    except (TypeError, ValueError, RecursionError) as exc:
        raise _fail(fmt, path, f"cannot save the {fmt.what} to {path}: it cannot be written as JSON ({exc})") from exc
    try:
        _replace_atomically(path, text)
    except OSError as exc:
        raise _fail(fmt, path, f"cannot save the {fmt.what} to {path}: {exc.strerror or exc} (an existing file is "
                               "left unchanged)") from exc
    return path


def _replace_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, flush it to disk, move it over ``path``; on any failure
    remove the temporary file and re-raise (``path`` untouched). Keeps an existing file's permissions."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            try:
                os.chmod(tmp, os.stat(path).st_mode & 0o7777)  # replacing a file keeps its permissions
            except OSError:
                pass
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_text(path: str | os.PathLike, text: str, *, what: str = "file") -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, as :func:`write_record` does: an HTML report, an export.

    Args:
        path: the file to write; its folder must exist.
        text: the contents.
        what: what is written, for messages (``"HTML report"``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ResultFileNotFoundError: the folder does not exist.
        ResultFileError: ``path`` is a folder, or cannot be written (permissions, disk full); an existing file is
            left unchanged.
    """
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise ResultFileNotFoundError(f"cannot write the {what} to {path}: the folder {folder} does not exist; "
                                      "create it first", path=path)
    if path.is_dir():
        raise ResultFileError(f"cannot write the {what} to {path}: it is a folder; give a file name", path=path)
    try:
        _replace_atomically(path, text)
    except OSError as exc:
        raise ResultFileError(f"cannot write the {what} to {path}: {exc.strerror or exc} (an existing file is left "
                              "unchanged)", path=path) from exc
    return path


class Saved:
    """Mixin of attnlab's saved result types: :meth:`from_dict`, :meth:`save` and :meth:`load`, written once.

    A subclass sets ``_record`` (its :class:`RecordFormat`) and, optionally, ``_save_options`` (``indent``,
    ``allow_nan`` for :func:`write_record`), and defines ``to_dict()`` (the record, ``format`` key first) and the
    classmethod ``_from_content(content: dict)`` (the object from the record's content keys, already checked).
    """

    _record: RecordFormat
    _save_options: dict = {}

    @classmethod
    def from_dict(cls, data: dict):
        """The object from a record made by ``to_dict()`` (checked: :func:`check_record`).

        Raises:
            ResultFileError: (the kind's subclass) another kind of record (the message names its loader), a newer or
                older format version, missing or unexpected keys, contents that do not make a valid object.
        """
        return from_record(data, cls._record, cls._from_content)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the object as JSON to ``path``, atomically: a failed save leaves an existing file unchanged.

        Args:
            path: the file; its folder must exist.

        Returns:
            ``path`` as a :class:`~pathlib.Path`.

        Raises:
            ResultFileNotFoundError: the folder does not exist.
            ResultFileError: (the kind's subclass) ``path`` is a folder, the file cannot be written, or a value JSON
                cannot hold.
        """
        return write_record(path, self.to_dict(), self._record, **self._save_options)

    @classmethod
    def load(cls, path: str | os.PathLike):
        """Read an object written by :meth:`save`.

        Args:
            path: the file.

        Raises:
            ResultFileNotFoundError: no file at ``path``.
            ResultFileError: (the kind's subclass, which is also the kind's own error class) the file is empty,
                binary, not JSON (or truncated), another kind of record (the message names its loader), a newer or
                older format version, or has missing or unexpected keys; the message names the file and the problem.
        """
        return load_record(path, cls._record, cls._from_content)


# -- HTML ---------------------------------------------------------------------------------------------------------
_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_SCRIPT_UNSAFE = re.compile("[<>&\u2028\u2029]")


def script_json(payload: Any) -> str:
    """``payload`` as JSON text that is safe inside an HTML ``<script type="application/json">`` element.

    ``<``, ``>`` and ``&`` (and U+2028, U+2029) are written as ``\\u003c``-style escapes, so no string in the
    payload (a token ``"</script>"``, a label ``"<!--<script>"``) can end the element or switch the HTML parser into
    a state that hides the rest of the page; ``JSON.parse`` of the element's text gives the same strings back.

    Args:
        payload: any JSON-serialisable value (NaN and infinities are refused).

    Returns:
        The JSON text.

    Raises:
        ValueError: NaN or infinity in the payload. TypeError: a value JSON cannot hold.
    """
    text = json.dumps(payload, allow_nan=False)
    return _SCRIPT_UNSAFE.sub(lambda m: _SCRIPT_ESCAPES[m.group(0)], text)

