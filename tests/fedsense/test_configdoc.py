"""docs/configuration.md is what fedsense.configdoc renders from fedsense/config.py."""

from __future__ import annotations

import dataclasses
import typing
from typing import get_args, get_origin

from fedsense import config as config_mod
from fedsense.configdoc import COMMAND, field_comments, leaf_keys, render
from tests.conftest import REPO

PAGE = REPO / "docs" / "configuration.md"


def _leaves(cls: type, prefix: str = "") -> list[str]:
    """Every leaf key of a config dataclass, walked here independently of
    fedsense.configdoc (list items as ``key[].field``)."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += _leaves(tp, f"{prefix}{f.name}.")
        elif get_origin(tp) is list and dataclasses.is_dataclass(get_args(tp)[0]):
            out += _leaves(get_args(tp)[0], f"{prefix}{f.name}[].")
        else:
            out.append(prefix + f.name)
    return out


def test_the_page_is_what_render_writes() -> None:
    assert PAGE.read_text() == render(), f"docs/configuration.md is out of date: run `{COMMAND}`"


def test_every_leaf_key_of_config_is_on_the_page() -> None:
    text = PAGE.read_text()
    leaves = _leaves(config_mod.Config)
    assert len(leaves) > 80 and "fed.rounds" in leaves and "data.shifts[].rotate" in leaves
    missing = [key for key in leaves if f"| `{key}` |" not in text]
    assert missing == [], f"config keys missing from docs/configuration.md: {missing}"
    assert set(leaves) <= set(leaf_keys())


def test_the_page_names_its_command_first() -> None:
    assert PAGE.read_text().splitlines()[0].startswith(f"Regenerate with `{COMMAND}`")


SAMPLE = '''
@dataclass
class Sample:
    """A docstring."""

    plain: int = 0
    trailing: int = 1  # trailing text
    # above, line one
    # above, line two
    both: int = 2  # and trailing
    spread: dict[str, int] = field(
        default_factory=dict
    )  # on the closing line
    # a group:
    first: int = 3  # first's own
    second: int = 4

    after_blank: int = 5
    # a group again:
    third: int = 6
    # its own comment ends the group
    fourth: int = 7
'''


def test_comments_above_trailing_and_grouped_are_read() -> None:
    got = field_comments(SAMPLE)["Sample"]
    assert got == {
        "plain": "",
        "trailing": "trailing text",
        "both": "above, line one above, line two and trailing",
        "spread": "on the closing line",
        "first": "a group: first's own",
        "second": "a group:",
        "after_blank": "",
        "third": "a group again:",
        "fourth": "its own comment ends the group",
    }


def test_the_config_module_comments_reach_the_page() -> None:
    comments = field_comments()
    assert comments["FedConfig"]["timeout"] == "seconds to wait for replies each round"
    assert comments["SyntheticConfig"]["modalities"] == "name -> [channels, time steps]"
    assert "| `fed.timeout` | `float` | `600.0` | seconds to wait for replies each round |" in render()
