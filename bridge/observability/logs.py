"""Structured logs: one JSON object per line, with secrets and signatures masked before anything is written.

Masking happens in a ``logging.Filter`` on the handler, so it covers every logger (ours, aiokafka,
aiohttp, websockets) and every part of a record: the message, its arguments, extra fields and the
formatted traceback. Two rules:

* **Known secret names**: the value after ``api_key=``, ``"passphrase": "…"``, ``X-Webhook-Signature:``,
  ``Authorization: Bearer …`` (and similar) in any text, and values of such keys in extra mappings.
* **Registered values**: every secret the configuration holds (``register_secrets``) is replaced
  wherever it appears, whatever the wording around it.

Context fields (``provider``, ``account``, ``source``, ``key``, ``event_id``…) come from ``extra=``
or from ``log_context(...)``, which the supervisor sets around each source's task.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal, TextIO

import orjson
from pydantic import BaseModel, ConfigDict, Field

from bridge.observability import metrics

__all__ = [
    "RepeatLimiter",
    "LogSettings",
    "LogLevel",
    "MASK",
    "CONTEXT_FIELDS",
    "Redactor",
    "RedactingFilter",
    "JsonFormatter",
    "TextFormatter",
    "REDACTOR",
    "register_secrets",
    "configure_logging",
    "log_context",
]

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def _default_levels() -> dict[str, LogLevel]:
    return {"aiokafka": "WARNING", "aiohttp.access": "INFO"}


class LogSettings(BaseModel):
    """The ``log:`` section of the configuration."""

    model_config = ConfigDict(extra="forbid")

    level: LogLevel = "INFO"
    format: Literal["json", "text"] = Field(default="json", description="json: one event per line; text: for humans")
    levels: dict[str, LogLevel] = Field(
        default_factory=_default_levels,
        description="per-logger levels, e.g. {aiokafka: WARNING}",
    )


MASK = "**********"
CONTEXT_FIELDS = ("provider", "account", "source", "direction", "key", "event_id", "status", "channel")
MIN_SECRET_LENGTH = 4
"""Shorter registered values are not masked by value (they would blank out ordinary words); their
names are still masked. Real credentials are far longer."""

_SECRET_NAMES = (
    r"api[_-]?key|access[_-]?key|secret(?:[_-]?key)?|client[_-]?secret|passphrase|password|passwd|pwd|"
    r"token|access[_-]?token|refresh[_-]?token|bearer[_-]?token|authorization|signature|sign|"
    r"ok-access-(?:key|sign|passphrase)|x-webhook-signature|cookie|set-cookie|sasl[_-]?password|credentials?"
)
# name, optional closing quote, separator, then a quoted or bare value
_PAIR = re.compile(
    r"(?P<name>(?<![A-Za-z0-9_])(?:" + _SECRET_NAMES + r"))(?P<sep>[\"']?\s*[:=]\s*)"
    r"(?P<value>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|(?:bearer|basic)\s+[^\s,;&}\]\"']+|[^\s,;&}\]\"']+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<scheme>\b(?:bearer|basic)\s+)(?P<value>[A-Za-z0-9._~+/=-]{8,})", re.IGNORECASE)
_SECRET_KEY = re.compile(r"^(?:" + _SECRET_NAMES + r")$", re.IGNORECASE)

# attributes every LogRecord has; anything else on a record came from ``extra=``
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}

_context: ContextVar[Mapping[str, Any]] = ContextVar("bridge_log_context", default=MappingProxyType({}))


class Redactor:
    """Masks secret values in text and mappings; thread-safe registration."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None

    def register(self, values: Iterable[str]) -> None:
        with self._lock:
            self._values.update(v for v in values if v and len(v) >= MIN_SECRET_LENGTH)
            ordered = sorted(self._values, key=len, reverse=True)  # longest first: no partial leftovers
            self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._pattern = None

    def redact(self, text: str, *, by_name: bool = True) -> str:
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(MASK, text)
        if by_name:
            text = _PAIR.sub(_mask_pair, text)
            text = _BEARER.sub(lambda m: m.group("scheme") + MASK, text)
        return text

    def redact_value(self, value: Any, *, by_name: bool = True) -> Any:
        """Strings redacted; mappings with secret-named keys masked; nested containers walked."""
        if isinstance(value, str):
            return self.redact(value, by_name=by_name)
        if isinstance(value, bytes):
            return self.redact(value.decode("utf-8", "replace"), by_name=by_name)
        if isinstance(value, Mapping):
            return {
                str(k): (MASK if _SECRET_KEY.match(str(k)) else self.redact_value(v, by_name=by_name))
                for k, v in value.items()
            }
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self.redact_value(v, by_name=by_name) for v in value]
        if value is None or isinstance(value, (bool, int, float)):
            return value
        return self.redact(str(value), by_name=by_name)


def _mask_pair(match: re.Match[str]) -> str:
    value = match.group("value")
    lowered = value.lower()
    if lowered.startswith(("bearer ", "basic ")):
        masked = value.split(None, 1)[0] + " " + MASK
    elif value[:1] in "\"'":
        masked = value[0] + MASK + value[0]
    else:
        masked = MASK
    return match.group("name") + match.group("sep") + masked


REDACTOR = Redactor()


def register_secrets(values: Iterable[str]) -> None:
    """Mask these values in every log line from now on (the configuration's secrets)."""
    REDACTOR.register(values)


class RedactingFilter(logging.Filter):
    """Rewrites a record in place so no handler or formatter downstream can see a secret.

    A record logged with ``extra={"redact_names": False}`` keeps ``name: value`` text as is
    (configuration errors name fields like ``kafka.sasl_password:`` but never carry values);
    registered secret values are masked regardless.
    """

    def __init__(self, redactor: Redactor = REDACTOR):
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        by_name = getattr(record, "redact_names", True)
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not lose the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg = self.redactor.redact(message, by_name=by_name)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text, by_name=by_name)
        if record.stack_info:
            record.stack_info = self.redactor.redact(record.stack_info, by_name=by_name)
        for name, value in list(vars(record).items()):
            if name in _STANDARD or name == "redact_names":
                continue
            setattr(record, name, MASK if _SECRET_KEY.match(name) else self.redactor.redact_value(value, by_name=by_name))
        return True


def _kind(template: str) -> str:
    text = template.lower()
    if "metadata" in text:
        return "metadata"
    if "connect" in text:
        return "connection"
    if "produce" in text or "batch" in text:
        return "produce"
    return "other"


SOURCE_LOGGERS = ("bridge.ingest", "bridge.sources")
"""Loggers whose repeated warnings are rate-limited like a chatty client's."""

_KIND_PHRASE = {"connection": "connection errors", "metadata": "metadata errors", "produce": "produce errors", "other": "repeats"}


class RepeatLimiter(logging.Filter):
    """Rate-limits what a chatty library logs again and again (aiokafka: two ERROR lines per
    connection attempt, thousands a second while a broker is away).

    Per logger, level and message template, the first record of each ``window`` passes; the rest
    are counted, left out, and summed up in one line when the window ends, e.g.
    ``aiokafka: 6,512 more connection errors in the last 10 s (suppressed; last: Unable connect to
    node with id 1: …)``. Every record, shown or not, counts in ``bridge_kafka_client_errors_total``.
    Records of other loggers pass untouched.
    """

    def __init__(self, prefixes: tuple[str, ...] = ("aiokafka",), *, window: float = 10.0, count_metric: bool = True):
        super().__init__()
        self.prefixes = prefixes
        self.window = window
        self.count_metric = count_metric
        self._lock = threading.Lock()
        # key -> [window start, suppressed, last suppressed message, timer]
        self._windows: dict[tuple[str, int, str], list[Any]] = {}

    def _limited(self, name: str) -> bool:
        return any(name == prefix or name.startswith(prefix + ".") for prefix in self.prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or getattr(record, "rate_limited", False) or not self._limited(record.name):
            return True
        template = str(record.msg)
        kind = _kind(template)
        if self.count_metric:
            metrics.KAFKA_CLIENT_ERRORS.labels(kind).inc()
        key = (record.name, record.levelno, template)
        now = time.monotonic()
        with self._lock:
            state = self._windows.get(key)
            if state is None or now - state[0] >= self.window:
                if state is not None:
                    self._close(key, state)
                self._windows[key] = [now, 0, None, None]
                return True
            state[1] += 1
            try:
                state[2] = record.getMessage()
            except Exception:
                state[2] = template
            if state[3] is None:  # say it when the window ends, even if nothing follows
                timer = threading.Timer(max(0.0, state[0] + self.window - now), self._flush, (key,))
                timer.daemon = True
                state[3] = timer
                timer.start()
            return False

    def _flush(self, key: tuple[str, int, str]) -> None:
        with self._lock:
            state = self._windows.pop(key, None)
            if state is None:
                return
            state[3] = None
            self._close(key, state)

    def _close(self, key: tuple[str, int, str], state: list[Any]) -> None:
        """Log the window's summary (called with the lock held; the record passes this filter)."""
        timer = state[3]
        if timer is not None:
            timer.cancel()
        suppressed = state[1]
        if not suppressed:
            return
        name, level, template = key
        logging.getLogger(name).log(
            level,
            "%s: %s more %s in the last %.0f s (suppressed; last: %s)",
            name.split(".")[0],
            f"{suppressed:,}",
            _KIND_PHRASE[_kind(template)],
            self.window,
            state[2],
            extra={"rate_limited": True, "suppressed": suppressed},
        )


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = dict(_context.get())
    for name, value in vars(record).items():
        if name not in _STANDARD and name != "redact_names":
            fields[name] = value
    return fields


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", <context fields>, "exception"}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in _fields(record).items():
            entry.setdefault(name, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class TextFormatter(logging.Formatter):
    """For a terminal: ``time level logger [field=value …] message``."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items() if v is not None)
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if fields:
            line += f" [{fields}]"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


def configure_logging(
    level: str = "INFO",
    fmt: str = "json",
    levels: Mapping[str, str] | None = None,
    *,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Route every logger to one redacting handler on ``stream`` (stderr by default)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RepeatLimiter())  # first: a left-out repeat costs no redaction
    # Per-request and per-item warnings of the sources (a webhook's 503 while Kafka is away, an item
    # not delivered) repeat at the request rate during an outage: same rule, counted by their metrics.
    handler.addFilter(RepeatLimiter(SOURCE_LOGGERS, count_metric=False))
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name, logger_level in (levels or {}).items():
        logging.getLogger(name).setLevel(logger_level)
    logging.captureWarnings(True)
    return handler


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add fields to every record logged in this task (and tasks it creates) until the block ends."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)
