"""One message a round against two, through Flower's simulation engine: the
same records, round by round, for fewer bytes down and no more up."""

from __future__ import annotations

import pytest

from fedsense.rundir import read_metrics
from fedsense_tools.experiment import run_experiment
from tests.conftest import SYNTHETIC

SAME = ("target", "source", "client", "train", "adapt", "clients")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, list[dict]]:
    tmp = tmp_path_factory.mktemp("messages")
    out = {}
    for n in (1, 2):  # m3bat_local: its train instructions carry no payload, so nothing is a round staler
        run = run_experiment(SYNTHETIC, ["adapt.method=m3bat_local", "fed.rounds=2", f"fed.messages_per_round={n}",
                                         f"data.cache_dir={tmp / 'cache'}"], out=str(tmp / f"m{n}"))
        out[n] = read_metrics(run)
    return out


def test_one_message_records_what_two_messages_record(runs):
    one, two = runs[1], runs[2]
    assert [r["round"] for r in one] == [r["round"] for r in two] == [1, 2]
    for a, b in zip(one, two):
        for section in SAME:
            assert a.get(section) == b.get(section), (a["round"], section)
        assert a["target"]["clients"] == 1 and a["source"]["clients"] == 5


def test_one_message_sends_the_arrays_once_a_round(runs):
    one, two = runs[1], runs[2]
    down = [r["comm"]["bytes_down"] for r in one]
    assert down[0] < 0.55 * two[0]["comm"]["bytes_down"]  # round 1: train instructions only
    assert sum(down) < 0.8 * sum(r["comm"]["bytes_down"] for r in two)  # the last round still ends with evaluate
    assert sum(r["comm"]["bytes_up"] for r in one) == sum(r["comm"]["bytes_up"] for r in two)
    assert [r["comm"]["bytes_up_train"] for r in one] == [r["comm"]["bytes_up_train"] for r in two]
