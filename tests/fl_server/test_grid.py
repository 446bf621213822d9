"""PromptGrid: the ServerApp's wait for replies over a Grid that hands them
out as they come in (as a SuperLink does), every reply kept once."""

from __future__ import annotations

import time

from flwr.app import Error, Message, Metadata

from fl_server.grid import PromptGrid, prompt


def _reply(to: str) -> Message:
    return Message(Error(code=0, reason="x"), metadata=Metadata(
        run_id=1, message_id=f"r-{to}", src_node_id=1, dst_node_id=0, reply_to_message_id=to, group_id="1",
        created_at=time.time(), ttl=60.0, message_type="train"))


class Arriving:
    """Replies arrive on given pulls; a pulled reply is handed out once."""

    def __init__(self, arrivals: dict[int, list[str]]) -> None:
        self.arrivals, self.pulls, self.asked = arrivals, 0, []

    def push_messages(self, messages):
        return ["a", "b", "c", None]  # Flower may return None for a message it could not push

    def pull_messages(self, message_ids):
        self.asked.append(set(message_ids))
        self.pulls += 1
        return [_reply(i) for i in self.arrivals.get(self.pulls, [])]


def test_every_reply_is_kept_and_pulling_stops_when_all_are_in():
    inner = Arriving({1: ["b"], 3: ["a", "c"], 4: ["a"]})
    started = time.time()
    replies = PromptGrid(inner, interval=0.05).send_and_receive([], timeout=10)
    assert sorted(m.metadata.reply_to_message_id for m in replies) == ["a", "b", "c"]
    assert inner.pulls == 3 and inner.asked == [{"a", "b", "c"}, {"a", "c"}, {"a", "c"}]
    assert time.time() - started < 1.0  # two short waits, not Flower's 2 x 3 s


def test_the_timeout_ends_the_wait_with_what_came():
    inner = Arriving({1: ["a"]})
    started = time.time()
    replies = PromptGrid(inner, interval=0.05).send_and_receive([], timeout=0.3)
    assert [m.metadata.reply_to_message_id for m in replies] == ["a"]
    assert 0.3 <= time.time() - started < 1.0


def test_a_simulations_grid_is_used_as_it_is():
    class InMemoryGrid:  # the name is what prompt() looks at
        pass

    grid = InMemoryGrid()
    assert prompt(grid) is grid and isinstance(prompt(Arriving({})), PromptGrid)
