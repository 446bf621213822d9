"""docs/configuration.md, generated from the config dataclasses.

:func:`render` walks :class:`fedsense.config.Config` and its nested
dataclasses and writes one Markdown table per section: every key (dotted),
its type, its default, and the comments that ``fedsense/config.py`` puts on
the field (a trailing ``# ...`` on its lines, and comment lines right above
it), read from the module's source, so the page says what the code says.

Regenerate the page with::

    .venv/bin/python -m fedsense.configdoc > docs/configuration.md

``tests/fedsense/test_configdoc.py`` fails when the page and :func:`render`
differ. Flower-free, and no torch: only the config module is imported.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import sys
import tokenize
import types
import typing
from collections.abc import Iterator
from typing import Any, Literal, Union, get_args, get_origin

from fedsense import config as config_module

COMMAND = ".venv/bin/python -m fedsense.configdoc > docs/configuration.md"

INTRO = """\
Every key of an experiment's YAML file, with its type, its default and what
`fedsense/config.py` says about it: that module is the one home of every
key, and this page is generated from it. A YAML file sets keys by section
(`fed:` then `rounds: 5`); `--set fed.rounds=5` sets one by its dotted name,
the value read as YAML (`--set data.target_domains=[1,2]`). Unknown keys,
wrong types and out-of-range values stop a run before it starts, naming the
key; names chosen from a registry (`adapt.method`, `model.encoder`,
`model.fusion`, `fed.aggregation`, `fed.update_encoding`) list the valid
ones. The resolved config, every key, is saved as `config.yaml` in the run
directory.

What the runtime knows is not config: the number of SuperNodes, each one's
`partition-id`, and a real device's `data-path` (and optional `role`,
`partition-id`, `state-dir`) come from Flower's node config.
"""


# --------------------------------------------------------------------------- #
# Comments of the dataclass fields, from the source of fedsense/config.py.


def _comments(source: str) -> tuple[dict[int, str], set[int]]:
    """Line -> comment text (without ``#``), and the lines that hold only a comment."""
    text: dict[int, str] = {}
    alone: set[int] = set()
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            text[row] = tok.string.lstrip("#").strip()
            if not lines[row - 1][:col].strip():
                alone.add(row)
    return text, alone


def field_comments(source: str | None = None) -> dict[str, dict[str, str]]:
    """Class name -> field name -> the field's comment text.

    A field's comment is the run of comment lines right above it (no blank
    line between) followed by the trailing comments on its own lines, joined
    with spaces. A run above that ends with ``:`` heads a group: it is put in
    front of the comment of every field that follows, up to a blank line or
    the next field with comment lines of its own.
    """
    source = inspect.getsource(config_module) if source is None else source
    text, alone = _comments(source)
    lines = source.splitlines()
    out: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields: dict[str, str] = {}
        group: list[str] = []
        previous_end = node.lineno
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                previous_end = item.end_lineno or item.lineno
                continue
            above: list[str] = []
            row = item.lineno - 1
            while row in alone:
                above.insert(0, text[row])
                row -= 1
            if any(not lines[r - 1].strip() for r in range(previous_end + 1, item.lineno)):
                group = []  # a blank line ends a group
            if above and above[-1].endswith(":"):
                group, above = above, []
            elif above:
                group = []
            end = item.end_lineno or item.lineno
            trailing = [text[r] for r in range(item.lineno, end + 1) if r in text and r not in alone]
            fields[item.target.id] = " ".join(group + above + trailing)
            previous_end = end
        out[node.name] = fields
    return out


# --------------------------------------------------------------------------- #
# Walking the dataclasses.


@dataclasses.dataclass(frozen=True)
class Row:
    key: str  # dotted name, e.g. "fed.rounds" or "data.shifts[].gain"
    type: str
    default: str
    comment: str


@dataclasses.dataclass(frozen=True)
class Section:
    name: str  # "" for the top level, else the dotted prefix ("data.shifts[]")
    cls: type
    rows: list[Row]


def _is_section(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp) and isinstance(tp, type)


def _item_section(tp: Any) -> type | None:
    """The dataclass of a ``list[<dataclass>]`` annotation, else None."""
    if get_origin(tp) is list:
        (item,) = get_args(tp)
        if _is_section(item):
            return item
    return None


def type_text(tp: Any) -> str:
    """A readable annotation: ``int``, ``list[int]``, ``"a" | "b"`` for a Literal."""
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in get_args(tp))
    if origin in (list, tuple, dict):
        return f"{origin.__name__}[{', '.join(type_text(a) for a in get_args(tp))}]"
    if origin in (Union, types.UnionType):
        return " | ".join(type_text(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING  # pragma: no cover (every config field has a default)


def default_text(value: Any) -> str:
    """A default as one would write it in YAML (JSON's spelling: ``false``, ``""``, ``[]``)."""
    if value is dataclasses.MISSING:
        return "(required)"
    return json.dumps(value, ensure_ascii=False)


def sections(
    cls: type = config_module.Config, prefix: str = "", comments: dict[str, dict[str, str]] | None = None
) -> Iterator[Section]:
    """Every section of ``cls`` depth first: its own keys, then its nested sections."""
    comments = field_comments() if comments is None else comments
    hints = typing.get_type_hints(cls)
    rows: list[Row] = []
    nested: list[tuple[str, type]] = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        if _is_section(tp):
            nested.append((key, tp))
            continue
        item = _item_section(tp)
        if item is not None:
            nested.append((f"{key}[]", item))
        rows.append(Row(key, type_text(tp), default_text(_default(f)), comments.get(cls.__name__, {}).get(f.name, "")))
    yield Section(prefix.rstrip("."), cls, rows)
    for key, tp in nested:
        yield from sections(tp, f"{key}.", comments)


def leaf_keys(cls: type = config_module.Config) -> list[str]:
    """Every key the page lists, dotted (``data.shifts[].gain`` for list items)."""
    return [row.key for section in sections(cls) for row in section.rows]


# --------------------------------------------------------------------------- #
# Markdown.


def _code(text: str) -> str:
    """Text for a code span in a table cell (a pipe would end the cell)."""
    return text.replace("|", "\\|")


def _text(text: str) -> str:
    """Plain text for a table cell: pipes escaped, ``<name>`` kept from reading as HTML."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace("|", "\\|")


def _docstring(cls: type) -> str:
    """The class docstring as one Markdown paragraph (``x`` -> `x`); dataclasses
    without one get an automatic signature docstring, which is left out."""
    doc = cls.__dict__.get("__doc__") or ""
    if not doc or doc.startswith(cls.__name__ + "("):
        return ""
    return " ".join(inspect.cleandoc(doc).split()).replace("``", "`")


def render() -> str:
    """The whole of docs/configuration.md."""
    out = [
        f"Regenerate with `{COMMAND}` (from `fedsense/config.py`; do not edit by hand).",
        "",
        "# Configuration reference",
        "",
        INTRO,
    ]
    for section in sections():
        title = section.name or "Top level"
        out += [f"## {title}", ""]
        about = _docstring(section.cls)
        out += [f"`{section.cls.__name__}`" + (f": {about}" if about else "."), ""]
        out += ["| key | type | default | comment in `fedsense/config.py` |", "|---|---|---|---|"]
        for row in section.rows:
            cells = [f"`{row.key}`", f"`{_code(row.type)}`", f"`{_code(row.default)}`", _text(row.comment)]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
