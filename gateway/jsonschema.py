"""JSON Schema (2020-12, as used by OpenAPI 3.1) generated from the ``Field`` trees that validate.

The admin API's OpenAPI document (``gateway/openapi.py``) describes request and response bodies
with the schemas produced here from ``gateway/validate.py``'s ``SCHEMAS`` and
``gateway/plugin_schemas.py``'s ``PLUGIN_SCHEMAS``: one source of truth, no hand-kept copy.

What a JSON Schema cannot say is left out, so the described schema is a *superset* of what the
server accepts, never a subset (everything the schema rejects, the server rejects too):
cross-field rules (``Obj.post``, e.g. "header_name required iff key == header") and ``Str`` checks
written as code (URL paths, hostnames, CIDRs) are only named in a ``description``. Case-folded
strings (header names, methods) accept any case, so their enums and patterns are case-insensitive.

``mode="request"`` describes what a client may send (defaults optional); ``mode="response"``
describes the normalized form the server returns (every field present).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from .plugin_schemas import PLUGIN_NAMES, PLUGIN_SCHEMAS, plugin_map
from .schema import FILL, Bool, Custom, Field, Float, Int, List, Map, Obj, Str

__all__ = ["Mode", "field_schema", "plugin_map_schema"]

Mode = Literal["request", "response"]
JSONSchema = dict[str, Any]

_PLUGIN_MAP = plugin_map()
_PLUGIN_MAP_FN = _PLUGIN_MAP.fn if isinstance(_PLUGIN_MAP, Custom) else None


def _case_insensitive(text: str) -> str:
    """A regex matching ``text`` literally in any letter case: ``get`` -> ``[Gg][Ee][Tt]``."""
    out = []
    for ch in text:
        if ch.isalpha() and ch.lower() != ch.upper() and len(ch.lower()) == 1 and len(ch.upper()) == 1:
            out.append(f"[{ch.upper()}{ch.lower()}]")
        else:
            out.append(re.escape(ch))
    return "".join(out)


def _widen_case(pattern: str) -> str:
    """A character-class pattern that also accepts the other letter case (a-z -> a-zA-Z)."""
    if "a-z" in pattern and "A-Z" not in pattern:
        return pattern.replace("a-z", "a-zA-Z")
    if "A-Z" in pattern and "a-z" not in pattern:
        return pattern.replace("A-Z", "A-Za-z")
    return pattern


def _nullable(schema: JSONSchema, field: Field) -> JSONSchema:
    if not field.nullable:
        return schema
    t = schema.get("type")
    if isinstance(t, str) and "enum" not in schema and "pattern" not in schema:
        return {**schema, "type": [t, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def _str_schema(field: Str, mode: Mode) -> JSONSchema:
    folds = field.lower or field.upper
    if field.choices is not None:
        if folds and mode == "request":
            alternatives = "|".join(_case_insensitive(c) for c in field.choices)
            return {"type": "string", "pattern": f"^(?:{alternatives})$",
                    "description": f"one of {', '.join(field.choices)} (any letter case)"}
        return {"type": "string", "enum": list(field.choices)}
    schema: JSONSchema = {"type": "string"}
    if field.min_len > 0:
        schema["minLength"] = field.min_len
    schema["maxLength"] = field.max_len
    if field.pattern is not None:
        pattern = field.pattern.pattern
        if folds and mode == "request":
            pattern = _widen_case(pattern)
        schema["pattern"] = f"^(?:{pattern})$"
    if field.extra_check is not None:
        doc = (field.extra_check.__doc__ or "").strip()
        schema["description"] = doc or "further checked by the server (422 with the field's path)"
    return schema


def _obj_schema(field: Obj, mode: Mode) -> JSONSchema:
    props = {name: field_schema(sub, mode) for name, sub in field.fields.items()}
    for name, sub in field.fields.items():
        if sub.default is not FILL and sub.default is not None and not isinstance(sub, Obj | Custom):
            default = sub.default
            if isinstance(default, str | int | float | bool | list | dict):
                props[name] = {**props[name], "default": default}
    required = list(field.fields) if mode == "response" else [n for n, s in field.fields.items() if s.required]
    schema: JSONSchema = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        schema["required"] = required
    if field.post is not None and (field.post.__doc__ or "").strip():
        schema["description"] = (field.post.__doc__ or "").strip()
    return schema


def plugin_map_schema(mode: Mode) -> JSONSchema:
    """``{plugin-name: config}``: one property per plugin, each with that plugin's schema."""
    return {
        "type": "object",
        "properties": {name: field_schema(PLUGIN_SCHEMAS[name], mode) for name in PLUGIN_NAMES},
        "additionalProperties": False,
        "description": "plugin name -> its config (see components.schemas.plugin.*)",
    }


def field_schema(field: Field, mode: Mode = "request") -> JSONSchema:
    """The JSON Schema of one ``Field`` (recursively)."""
    schema: JSONSchema
    if isinstance(field, Str):
        schema = _str_schema(field, mode)
    elif isinstance(field, Int):
        schema = {"type": "integer", "minimum": field.min, "maximum": field.max}
    elif isinstance(field, Float):
        schema = {"type": "number"}
        if field.gt is not None:
            schema["exclusiveMinimum"] = field.gt
        if field.min is not None:
            schema["minimum"] = field.min
        if field.max is not None:
            schema["maximum"] = field.max
    elif isinstance(field, Bool):
        schema = {"type": "boolean"}
    elif isinstance(field, List):
        schema = {"type": "array", "items": field_schema(field.item, mode)}
        if field.min_items:
            schema["minItems"] = field.min_items
        if field.max_items is not None:
            schema["maxItems"] = field.max_items
    elif isinstance(field, Map):
        schema = {"type": "object", "additionalProperties": field_schema(field.value, mode)}
        if field.key is not None:
            key = _str_schema(field.key, mode)
            key.pop("description", None)
            schema["propertyNames"] = key
        if field.max_items is not None:
            schema["maxProperties"] = field.max_items
    elif isinstance(field, Obj):
        schema = _obj_schema(field, mode)
    elif isinstance(field, Custom) and field.fn is _PLUGIN_MAP_FN:
        schema = plugin_map_schema(mode)
    elif isinstance(field, Custom):
        schema = {"type": "object"}
    else:  # pragma: no cover - every Field subclass is handled above
        raise TypeError(f"no JSON Schema for {type(field).__name__}")
    return _nullable(schema, field)
