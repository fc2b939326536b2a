"""Walking the settings model to place one raw value (an environment variable, a secret file, an
``x_file`` reference) at its path: list items by index or name, JSON for structured values, and an
error that names the field and where the value came from — never the value."""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

__all__ = ["ConfigError", "Loc", "assign", "dotted", "read_value", "resolve_file_refs"]

Loc = tuple[str | int, ...]
_FILE_SUFFIX = "_file"


class ConfigError(Exception):
    """A configuration that cannot run: names each field and where it came from, never a value."""


# -- walking the model --------------------------------------------------------------------------


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` → (X, True); anything else → (itself, False)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if len(args) == 1:
            return args[0], optional
        return annotation, optional
    return annotation, False


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _sequence_item(annotation: Any) -> Any | None:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        args = typing.get_args(annotation)
        return args[0] if args else Any
    return None


def _mapping_value(annotation: Any) -> Any | None:
    if typing.get_origin(annotation) in (dict, Mapping):
        args = typing.get_args(annotation)
        return args[1] if len(args) == 2 else Any
    return None


def _is_structured(annotation: Any) -> bool:
    inner, _ = _unwrap(annotation)
    return _is_model(inner) or _sequence_item(inner) is not None or _mapping_value(inner) is not None


def _field_for(model: type[BaseModel], segment: str) -> tuple[str, FieldInfo] | None:
    lowered = segment.lower()
    for name, info in model.model_fields.items():
        if name.lower() == lowered:
            return name, info
    return None


def dotted(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _unknown(model: type[BaseModel], loc: Loc, segment: str, origin: str) -> ConfigError:
    where = dotted(loc + (segment.lower(),))
    hint = difflib.get_close_matches(segment.lower(), list(model.model_fields), n=1)
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    return ConfigError(f"invalid configuration: {where}: unknown setting{suggestion} [{origin}]")


def assign(data: dict[str, Any], model: type[BaseModel], path: list[str], raw: str, origin: str, origins: dict[Loc, str]) -> None:
    """Put one textual value at ``path`` (field names, list indexes or item names) into ``data``."""
    node: Any = data
    loc: Loc = ()
    annotation: Any = model
    index = 0
    while True:
        segment = path[index]
        last = index == len(path) - 1
        if _is_model(annotation):
            found = _field_for(annotation, segment)
            if found is None and last and segment.lower().endswith(_FILE_SUFFIX):
                target = _field_for(annotation, segment[: -len(_FILE_SUFFIX)])
                if target is not None:
                    name, info = target
                    value = read_value(Path(raw), f"{origin} ({dotted(loc + (name,))})")
                    node[name] = _coerce(value, info.annotation, origin, loc + (name,))
                    origins[loc + (name,)] = f"{origin} → {raw}"
                    return
            if found is None:
                raise _unknown(annotation, loc, segment, origin)
            name, info = found
            loc = loc + (name,)
            if last:
                node[name] = _coerce(raw, info.annotation, origin, loc)
                origins[loc] = origin
                return
            inner, _ = _unwrap(info.annotation)
            child = node.get(name)
            if _sequence_item(inner) is not None:
                if not isinstance(child, list):
                    child = list(child) if isinstance(child, (tuple, set)) else []
            elif not isinstance(child, dict):
                child = {}
            node[name] = child
            node, annotation = child, inner
        elif (item := _sequence_item(annotation)) is not None:
            position = _list_position(node, item, segment, loc, origin)
            loc = loc + (position,)
            item_inner, _ = _unwrap(item)
            if last:
                value = _coerce(raw, item, origin, loc)
                if position == len(node):
                    node.append(value)
                else:
                    node[position] = value
                origins[loc] = origin
                return
            if position == len(node):
                node.append({})
            if not isinstance(node[position], dict):
                node[position] = {}
            node, annotation = node[position], item_inner
        elif (value_type := _mapping_value(annotation)) is not None:
            key = segment.lower()
            loc = loc + (key,)
            if last:
                node[key] = _coerce(raw, value_type, origin, loc)
                origins[loc] = origin
                return
            node = node.setdefault(key, {})
            annotation, _ = _unwrap(value_type)
        else:
            raise ConfigError(f"invalid configuration: {dotted(loc)} has no part {segment.lower()!r} [{origin}]")
        index += 1


def _list_position(items: list[Any], item_type: Any, segment: str, loc: Loc, origin: str) -> int:
    """An index (``0``; ``len`` appends) or, for items with a ``name``, that name."""
    if segment.isdigit():
        position = int(segment)
        if position > len(items):
            raise ConfigError(
                f"invalid configuration: {dotted(loc + (position,))}: index past the end (list has {len(items)} items) [{origin}]"
            )
        return position
    inner, _ = _unwrap(item_type)
    if _is_model(inner) and "name" in inner.model_fields:
        for position, existing in enumerate(items):
            if isinstance(existing, dict) and str(existing.get("name", "")).lower() == segment.lower():
                return position
        raise ConfigError(
            f"invalid configuration: {dotted(loc)}: no item named {segment.lower()!r} to set (define it in the "
            f"config file, or address it by index) [{origin}]"
        )
    raise ConfigError(f"invalid configuration: {dotted(loc)}: items are addressed by index, not {segment!r} [{origin}]")


def _coerce(raw: str, annotation: Any, origin: str, loc: Loc) -> Any:
    """Text to what pydantic should validate: JSON for structured values, None for ``null``."""
    inner, optional = _unwrap(annotation)
    text = raw.strip()
    if optional and text.lower() in ("null", "none", "") and inner not in (str, SecretStr):
        return None
    if _is_structured(annotation) and text[:1] in ("[", "{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"invalid configuration: {dotted(loc)}: not valid JSON ({exc.msg}) [{origin}]") from None
    item = _sequence_item(inner)
    if item is not None and _unwrap(item)[0] is SecretStr and "\n" in raw.strip("\n"):
        return [line for line in raw.splitlines() if line]  # a secrets file: one secret per line
    return raw


def resolve_file_refs(data: Any, annotation: Any, loc: Loc, origins: dict[Loc, str]) -> None:
    """In the config file, ``x_file: PATH`` stands for ``x`` read from PATH."""
    inner, _ = _unwrap(annotation)
    if _is_model(inner) and isinstance(data, dict):
        for key in list(data):
            if not isinstance(key, str):
                continue
            found = _field_for(inner, key)
            if found is None and key.lower().endswith(_FILE_SUFFIX):
                target = _field_for(inner, key[: -len(_FILE_SUFFIX)])
                if target is not None and isinstance(data[key], str):
                    name, info = target
                    value = read_value(Path(data.pop(key)), f"config {dotted(loc + (key,))}")
                    data[name] = _coerce(value, info.annotation, "config file", loc + (name,))
                    origins[loc + (name,)] = f"file named by {dotted(loc + (key,))}"
                continue
            if found is not None:
                resolve_file_refs(data[key], found[1].annotation, loc + (found[0],), origins)
    elif (item := _sequence_item(inner)) is not None and isinstance(data, list):
        for position, value in enumerate(data):
            resolve_file_refs(value, item, loc + (position,), origins)


def read_value(path: Path, origin: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"invalid configuration: {origin}: cannot read {path} ({exc.__class__.__name__})") from None
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text
