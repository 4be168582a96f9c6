"""How a config field is declared, and the walk over the schema that everything else reads.

A field of the run configuration (lm/config.py) says once, in its declaration: its default,
a one-line doc, the values it allows, the model family that alone reads it, and whether
resuming a workdir may change it. Validation (lm/config_checks.py), the resume guard
(lm/workdir.py) and the reference page (lm/config_docs.py, docs/config.md) all read those
declarations through `schema_fields`, so none of them keeps a list of its own.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Iterator, Mapping, Sequence

# Each config section says whether its fields are guarded on resume by default, as a class
# attribute of this name; a field may say otherwise with setting(..., guarded=...).
SECTION_GUARDED = "guarded_on_resume"
FAMILIES = ("gpt", "bert", "t5")


class ConfigError(ValueError):
    """A config value is wrong. The message names the field and how to fix it."""


def setting(default: Any, doc: str, *, choices: Sequence[str] | Mapping[str, str] = (), family: str = "",
            guarded: bool | None = None) -> Any:
    """A dataclass field with its documentation and constraints.

    choices: the allowed values, or a mapping from each allowed value to a note on what it means.
    family: the one model family that reads this field; other families must leave the default.
    guarded: whether resuming a workdir with a different value is refused (a changed value would
      make the saved checkpoints mean something else); None: as the section says.
    """
    notes = dict(choices) if isinstance(choices, Mapping) else {value: "" for value in choices}
    if notes and default not in notes:
        raise TypeError(f"default {default!r} is not among the choices {tuple(notes)}")
    if family and family not in FAMILIES:
        raise TypeError(f"family {family!r} is not one of {FAMILIES}")
    return dataclasses.field(default=default, metadata={"doc": doc, "choices": notes, "family": family,
                                                        "guarded": guarded})


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One leaf field of the schema, as the docs, the checks and the resume guard see it."""
    key: str  # dotted, as in --config.<key>
    default: Any
    doc: str
    choices: Mapping[str, str]  # allowed value -> note; empty: any value of the field's type
    family: str  # the only family that reads it; empty: every family
    guarded: bool  # a resume may not change it


def schema_fields(cls: type, prefix: str = "") -> Iterator[FieldSpec]:
    """Every leaf field of the dataclass `cls`, depth first in declaration order.

    Raises TypeError for a field whose resume guard was decided by nobody (neither the field nor
    its section), so a new field cannot slip past that decision."""
    section_guarded = getattr(cls, SECTION_GUARDED, None)
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(field.default):
            yield from schema_fields(type(field.default), f"{prefix}{field.name}.")
            continue
        guarded = field.metadata.get("guarded")
        guarded = section_guarded if guarded is None else guarded
        if guarded is None:
            raise TypeError(f"config field {prefix}{field.name}: say whether a resume may change it, with "
                            f"setting(..., guarded=...) or {cls.__name__}.{SECTION_GUARDED}")
        yield FieldSpec(key=f"{prefix}{field.name}", default=field.default, doc=field.metadata.get("doc", ""),
                        choices=field.metadata.get("choices", {}), family=field.metadata.get("family", ""),
                        guarded=guarded)


def lookup(config: Any, dotted: str) -> Any:
    value = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def build(cls: type, values: Mapping[str, Any], prefix: str = ""):
    """An instance of the dataclass `cls` from nested `values`; unknown keys and wrong types are
    refused with the dotted key named (and the closest known key suggested)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, fields, n=1)
        hint = f"did you mean '{prefix}{close[0]}'?" if close else f"known keys: {', '.join(sorted(fields))}"
        raise ConfigError(f"unknown config key '{prefix}{key}': {hint}")
    kwargs = {}
    for name, value in values.items():
        default = fields[name].default
        if dataclasses.is_dataclass(default):
            kwargs[name] = build(type(default), value, f"{prefix}{name}.")
            continue
        kwargs[name] = _coerce(value, default, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(value, default, name):
    """Accepts ints for float fields; anything else must have the declared type."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"config '{name}' must be true or false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, type(default)):
        raise ConfigError(
            f"config '{name}' must be of type {type(default).__name__}, got {value!r} ({type(value).__name__})")
    return value
