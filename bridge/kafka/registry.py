"""Async client for the Confluent Schema Registry REST API, and the id lookup the publisher needs.

Only the calls this project uses, spoken the way Confluent, Karapace and Apicurio's
``/apis/ccompat/v7`` all understand them. Where they answer differently the client evens it
out (Confluent lists ``messages`` in a compatibility answer, Apicurio one ``reason``; Confluent
answers 404 for a subject without its own compatibility level, Apicurio the global one).

Credentials may come as settings or inside the URL; they go into the Authorization header only
and never into a message, a repr or an exception.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
from pydantic import SecretStr
from yarl import URL

from bridge.contract.jsonutil import JSONError, loads_exact
from bridge.contract.schema import RECORD_NAME
from bridge.kafka.settings import SchemaRegistrySettings

__all__ = [
    "CONTENT_TYPE",
    "COMPATIBILITY_LEVELS",
    "RegistryError",
    "RegistryUnavailable",
    "SubjectNotFound",
    "VersionNotFound",
    "SchemaNotFound",
    "IncompatibleSchema",
    "InvalidSchema",
    "SchemaNotRegistered",
    "RegisteredSchema",
    "CompatibilityResult",
    "RegistryClient",
    "subject_name",
    "resolve_schema_ids",
]

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
COMPATIBILITY_LEVELS = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)
SchemaType = Literal["JSON", "AVRO", "PROTOBUF"]


class RegistryError(Exception):
    """The registry refused or failed a request; ``error_code`` is Confluent's (40401, 409, …)."""

    def __init__(self, message: str, *, status: int | None = None, error_code: int | None = None):
        super().__init__(message)
        self.status = status
        self.error_code = error_code


class RegistryUnavailable(RegistryError):
    """No answer: connection refused, timeout, or a 5xx that says nothing about our request."""


class SubjectNotFound(RegistryError):
    pass


class VersionNotFound(RegistryError):
    pass


class SchemaNotFound(RegistryError):
    pass


class IncompatibleSchema(RegistryError):
    pass


class InvalidSchema(RegistryError):
    pass


class SchemaNotRegistered(RegistryError):
    """The publisher's schema is not under its subject and auto-registration is off."""


_ERRORS: dict[int, type[RegistryError]] = {
    40401: SubjectNotFound,
    40402: VersionNotFound,
    40403: SchemaNotFound,
    409: IncompatibleSchema,
    42201: InvalidSchema,
}


@dataclass(frozen=True, slots=True)
class RegisteredSchema:
    subject: str
    version: int
    id: int
    schema: str
    schema_type: str = "JSON"


@dataclass(frozen=True, slots=True)
class CompatibilityResult:
    is_compatible: bool
    messages: tuple[str, ...] = ()


def subject_name(topic: str, strategy: str = "topic_name", record: str = RECORD_NAME) -> str:
    """The value subject of ``topic`` under Confluent's subject name strategies."""
    if strategy == "topic_name":
        return f"{topic}-value"
    if strategy == "record_name":
        return record
    if strategy == "topic_record_name":
        return f"{topic}-{record}"
    raise ValueError(f"unknown subject name strategy {strategy!r}")


class RegistryClient:
    """One aiohttp session against one registry; use as ``async with RegistryClient(url) as c``."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: SecretStr | None = None,
        bearer_token: SecretStr | None = None,
        timeout: float = 10.0,
        ssl_cafile: str | None = None,
    ):
        parsed = URL(url.rstrip("/"))
        if parsed.user is not None and username is None:
            username = parsed.user
            password = SecretStr(parsed.password or "")
        self._base = parsed.with_user(None).with_password(None) if parsed.user is not None else parsed
        self._authorization: SecretStr | None = None
        if username:
            pair = f"{username}:{password.get_secret_value() if password else ''}".encode()
            self._authorization = SecretStr("Basic " + base64.b64encode(pair).decode())
        elif bearer_token is not None:
            self._authorization = SecretStr(f"Bearer {bearer_token.get_secret_value()}")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl: ssl.SSLContext | None = ssl.create_default_context(cafile=ssl_cafile) if ssl_cafile else None
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: SchemaRegistrySettings) -> RegistryClient:
        if not settings.url:
            raise ValueError("schema_registry.url is not set")
        return cls(
            settings.url,
            username=settings.username,
            password=settings.password,
            bearer_token=settings.bearer_token,
            timeout=settings.timeout_seconds,
            ssl_cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
        )

    @property
    def url(self) -> str:
        """The base URL without credentials: safe to print."""
        return str(self._base)

    def __repr__(self) -> str:
        return f"RegistryClient({self.url!r})"

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # -- schemas ---------------------------------------------------------------------------------

    async def register(self, subject: str, schema: str, schema_type: SchemaType = "JSON") -> int:
        """Register ``schema`` under ``subject``; the same text again returns the same id."""
        body = await self._request("POST", f"/subjects/{_q(subject)}/versions", _schema_body(schema, schema_type))
        return int(body["id"])

    async def lookup(self, subject: str, schema: str, schema_type: SchemaType = "JSON") -> RegisteredSchema | None:
        """The registration of exactly this schema under ``subject``, or None."""
        try:
            body = await self._request("POST", f"/subjects/{_q(subject)}", _schema_body(schema, schema_type))
        except (SubjectNotFound, SchemaNotFound):
            return None
        return _registered(body, subject)

    async def schema_by_id(self, schema_id: int) -> tuple[str, str]:
        """``(schema_type, schema_text)`` of a schema id, as a consumer needs it."""
        body = await self._request("GET", f"/schemas/ids/{int(schema_id)}")
        return str(body.get("schemaType") or "AVRO"), str(body["schema"])

    async def subjects(self) -> list[str]:
        return [str(s) for s in await self._request("GET", "/subjects")]

    async def versions(self, subject: str) -> list[int]:
        return [int(v) for v in await self._request("GET", f"/subjects/{_q(subject)}/versions")]

    async def get_version(self, subject: str, version: int | str = "latest") -> RegisteredSchema:
        body = await self._request("GET", f"/subjects/{_q(subject)}/versions/{_q(str(version))}")
        return _registered(body, subject)

    async def delete_subject(self, subject: str) -> None:
        """Remove a subject for good (soft delete, then permanent, as Confluent requires)."""
        try:
            await self._request("DELETE", f"/subjects/{_q(subject)}")
        except SubjectNotFound:
            pass
        try:
            await self._request("DELETE", f"/subjects/{_q(subject)}", params={"permanent": "true"})
        except SubjectNotFound:
            pass

    # -- compatibility -----------------------------------------------------------------------------

    async def get_compatibility(self, subject: str | None = None) -> str:
        """The level in force for ``subject`` (its own, else the global one), or the global level."""
        if subject is None:
            body = await self._request("GET", "/config")
        else:
            try:
                body = await self._request("GET", f"/config/{_q(subject)}", params={"defaultToGlobal": "true"})
            except RegistryError as exc:  # no such subject / no level of its own (Confluent 40408)
                if exc.status != 404:
                    raise
                body = await self._request("GET", "/config")
        return str(body.get("compatibilityLevel") or body.get("compatibility"))

    async def set_compatibility(self, subject: str, level: str) -> str:
        if level not in COMPATIBILITY_LEVELS:
            raise ValueError(f"compatibility level must be one of {', '.join(COMPATIBILITY_LEVELS)}")
        body = await self._request("PUT", f"/config/{_q(subject)}", {"compatibility": level})
        return str(body.get("compatibility") or body.get("compatibilityLevel"))

    async def test_compatibility(
        self, subject: str, schema: str, schema_type: SchemaType = "JSON", *, version: int | str = "latest"
    ) -> CompatibilityResult:
        """Would ``schema`` be accepted next to ``version`` under the subject's compatibility level?"""
        body = await self._request(
            "POST",
            f"/compatibility/subjects/{_q(subject)}/versions/{_q(str(version))}",
            _schema_body(schema, schema_type),
            params={"verbose": "true"},
        )
        messages = [str(m) for m in body.get("messages") or ()]
        if body.get("reason"):
            messages.append(str(body["reason"]))
        return CompatibilityResult(bool(body["is_compatible"]), tuple(messages))

    # -- plumbing ---------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": f"{CONTENT_TYPE}, application/json", "Content-Type": CONTENT_TYPE}
        if self._authorization is not None:
            headers["Authorization"] = self._authorization.get_secret_value()
        return headers

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _request(
        self, method: str, path: str, payload: dict[str, Any] | None = None, *, params: dict[str, str] | None = None
    ) -> Any:
        url = URL(f"{self._base}{path}", encoded=True)
        data = json.dumps(payload).encode() if payload is not None else None
        try:
            async with self._client().request(
                method, url, data=data, params=params, headers=self._headers(), ssl=self._ssl if self._ssl else True
            ) as response:
                text = await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise RegistryUnavailable(
                f"schema registry at {self.url} not reachable ({exc.__class__.__name__})"
            ) from None
        try:
            body = loads_exact(text) if text else {}
        except JSONError:
            body = {"message": text[:300].decode("utf-8", "replace")}
        if status < 300:
            return body
        raise _error(method, path, status, body)


def _q(part: str) -> str:
    return quote(part, safe="")


def _schema_body(schema: str, schema_type: SchemaType) -> dict[str, Any]:
    body: dict[str, Any] = {"schema": schema}
    if schema_type != "AVRO":  # Confluent's default type; older registries reject the field for Avro
        body["schemaType"] = schema_type
    return body


def _registered(body: dict[str, Any], subject: str) -> RegisteredSchema:
    return RegisteredSchema(
        subject=str(body.get("subject", subject)),
        version=int(body["version"]),
        id=int(body["id"]),
        schema=str(body.get("schema", "")),
        schema_type=str(body.get("schemaType") or "AVRO"),
    )


def _error(method: str, path: str, status: int, body: Any) -> RegistryError:
    message = body.get("message") if isinstance(body, dict) else None
    code = body.get("error_code") if isinstance(body, dict) else None
    error_code = int(code) if isinstance(code, int) and code else None
    text = f"{method} {path}: HTTP {status}" + (f" (error {error_code})" if error_code else "") + f": {message or 'no message'}"
    if error_code in _ERRORS:
        return _ERRORS[error_code](text, status=status, error_code=error_code)
    if status in (502, 503, 504):
        return RegistryUnavailable(text, status=status, error_code=error_code)
    return RegistryError(text, status=status, error_code=error_code)


async def resolve_schema_ids(
    settings: SchemaRegistrySettings, topics: Iterable[str], schema: str, schema_type: SchemaType = "JSON"
) -> dict[str, int]:
    """The id of ``schema`` under each topic's subject, looked up once at publisher start.

    Retries while the registry is unreachable (up to ``startup_timeout_seconds``), so a registry
    that starts after the bridge is no crash. A schema missing from its subject is registered
    only with ``auto_register``; otherwise starting fails, naming the command that fixes it.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.startup_timeout_seconds
    async with RegistryClient.from_settings(settings) as client:
        while True:
            try:
                return {topic: await _resolve_one(client, settings, topic, schema, schema_type) for topic in topics}
            except RegistryUnavailable as exc:
                if loop.time() > deadline:
                    raise ConnectionError(
                        f"{exc} within {settings.startup_timeout_seconds:.0f}s"
                    ) from None
                log.warning("schema registry not reachable yet; retrying")
                await asyncio.sleep(1.0)


async def _resolve_one(
    client: RegistryClient, settings: SchemaRegistrySettings, topic: str, schema: str, schema_type: SchemaType
) -> int:
    subject = subject_name(topic, settings.subject_strategy)
    found = await client.lookup(subject, schema, schema_type)
    if found is not None:
        return found.id
    if settings.auto_register:
        schema_id = await client.register(subject, schema, schema_type)
        log.info("registered the event schema under %s as id %d", subject, schema_id)
        return schema_id
    raise SchemaNotRegistered(
        f"the event schema is not registered under subject {subject!r} at {client.url}; "
        "run `transfer-bridge schemas register` (or set schema_registry.auto_register)"
    )
