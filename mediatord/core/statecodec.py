"""An explicit, versioned encoding of the state for journal snapshots.

Snapshots outlive the process that wrote them, so they are not pickles: a
pickle runs code on load, and a mediatord of another version would read a
changed class without noticing. Here every value is plain JSON and every
non-JSON value is tagged; only the classes a caller names may be built, and a
dataclass whose stored fields differ from the class's is refused.

The tags (the first item of a JSON array):

- ``["l", ...]`` list, ``["t", ...]`` tuple, ``["s", ...]`` set and
  ``["f", ...]`` frozenset (both sorted by their encoding, so that equal states
  encode to equal bytes whatever the hash seed);
- ``["d", [k, v], ...]`` a dict with keys of any encodable type, in insertion
  order (which the state's meaning may depend on);
- ``["e", "ClassName", value]`` an enum member;
- ``["c", "ClassName", {field: value}]`` a dataclass instance.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any

FORMAT_VERSION = 1

Json = Any  # what json.loads returns


class CodecError(Exception):
    """A value that cannot be encoded, or stored data that cannot be decoded."""


def encode(value: object) -> Json:
    if value is None or type(value) in (bool, int, str):
        return value
    match value:
        case list():
            return ["l", *map(encode, value)]
        case tuple():
            return ["t", *map(encode, value)]
        case set() | frozenset():
            items = sorted((encode(v) for v in value), key=_sort_key)
            return ["s" if isinstance(value, set) else "f", *items]
        case dict():
            return ["d", *([encode(k), encode(v)] for k, v in value.items())]
        case Enum():
            return ["e", type(value).__name__, encode(value.value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return ["c", type(value).__name__, fields]
    raise CodecError(f"cannot encode a {type(value).__qualname__}")


def _sort_key(encoded: Json) -> str:
    return json.dumps(encoded, sort_keys=True, separators=(",", ":"))


class Decoder:
    """Decodes values made of the given dataclasses and enums (and nothing else)."""

    def __init__(self, types: Iterable[type]) -> None:
        self.types: dict[str, type] = {}
        for cls in types:
            if cls.__name__ in self.types and self.types[cls.__name__] is not cls:
                raise ValueError(f"two classes named {cls.__name__}")
            self.types[cls.__name__] = cls
        self._fields = {
            name: frozenset(f.name for f in dataclasses.fields(cls))
            for name, cls in self.types.items()
            if dataclasses.is_dataclass(cls)
        }

    def decode(self, data: Json) -> Any:
        if data is None or type(data) in (bool, int, str):
            return data
        if not isinstance(data, list) or not data:
            raise CodecError(f"not an encoded value: {data!r:.80}")
        tag, *rest = data
        match tag:
            case "l":
                return [self.decode(v) for v in rest]
            case "t":
                return tuple(self.decode(v) for v in rest)
            case "s":
                return {self.decode(v) for v in rest}
            case "f":
                return frozenset(self.decode(v) for v in rest)
            case "d":
                return {self.decode(k): self.decode(v) for k, v in rest}
            case "e":
                name, value = rest
                cls = self._type(name)
                if not issubclass(cls, Enum):
                    raise CodecError(f"{name} is not an enum")
                try:
                    return cls(self.decode(value))
                except ValueError:
                    raise CodecError(f"{name} has no member {value!r}") from None
            case "c":
                name, fields = rest
                return self._dataclass(name, fields)
        raise CodecError(f"unknown tag {tag!r}")

    def _type(self, name: str) -> type:
        cls = self.types.get(name)
        if cls is None:
            raise CodecError(f"class {name} may not appear in a snapshot")
        return cls

    def _dataclass(self, name: str, fields: Mapping[str, Json]) -> object:
        cls = self._type(name)
        expected = self._fields.get(name)
        if expected is None:
            raise CodecError(f"{name} is not a dataclass")
        if set(fields) != expected:
            missing = ", ".join(sorted(expected - set(fields))) or "none"
            extra = ", ".join(sorted(set(fields) - expected)) or "none"
            raise CodecError(
                f"{name} was written by another version of mediatord "
                f"(fields missing: {missing}; unknown: {extra})"
            )
        obj: object = object.__new__(cls)
        # Through object.__setattr__: frozen dataclasses refuse plain assignment.
        for key, value in fields.items():
            object.__setattr__(obj, key, self.decode(value))
        return obj
