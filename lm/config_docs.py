"""docs/config.md, the reference of every config field, generated from the schema in lm/config.py.

    python -m lm.config_docs          # rewrites docs/config.md
    python -m lm.config_docs --check  # exits 1 when docs/config.md is out of date

tests/test_config_schema.py fails when the page and the schema disagree, so the page is never
edited by hand: change the field's `setting(...)` and regenerate.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from lm import config as config_lib
from lm.config_fields import FieldSpec, schema_fields

PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "config.md")

_INTRO = """# Config reference

Generated from `lm/config.py` by `python -m lm.config_docs`; do not edit by hand.

Every field is set in a config file (`configs/*.py`) or on the command line as
`--config.<section>.<field>=value`. **Family**: the only model family that reads the field; on
another family it must keep its default (checked before compiling). **Guarded**: resuming a
workdir with a changed value is refused unless `--allow_config_change` is passed, because its
checkpoints would then mean something else.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def _allowed(spec: FieldSpec) -> str:
    return "<br>".join(f"`{value}`" + (f": {_cell(note)}" if note else "") for value, note in spec.choices.items())


def _table(specs: list[FieldSpec]) -> list[str]:
    rows = ["| field | default | allowed | family | guarded | doc |", "|---|---|---|---|---|---|"]
    for spec in specs:
        cells = (f"`{spec.key}`", f"`{spec.default!r}`", _allowed(spec), spec.family, "yes" if spec.guarded else "",
                 _cell(spec.doc))
        rows.append("| " + " | ".join(cells) + " |")
    return rows + [""]


def markdown_reference() -> str:
    """The whole page: one table per config section, its fields in declaration order."""
    specs = list(schema_fields(config_lib.Config))
    lines = [_INTRO]
    for field in dataclasses.fields(config_lib.Config):
        if not dataclasses.is_dataclass(field.default):
            continue
        lines.append(f"## {field.name}\n")
        section = type(field.default)
        if section.__doc__ and not section.__doc__.startswith(section.__name__ + "("):  # dataclass's own: no doc
            lines.append(" ".join(section.__doc__.split()) + "\n")
        lines += _table([spec for spec in specs if spec.key.startswith(field.name + ".")])
    lines += ["## top level\n"] + _table([spec for spec in specs if "." not in spec.key])
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    text = markdown_reference()
    if "--check" in argv:
        with open(PATH) as f:
            current = f.read()
        if current != text:
            print(f"{PATH} is out of date: run python -m lm.config_docs", file=sys.stderr)
            return 1
        return 0
    with open(PATH, "w") as f:
        f.write(text)
    print(f"wrote {PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
