"""The ServerApp's Grid, waiting less for replies in a deployment.

Flower 1.42's deployment Grid (``flwr.superlink.grid.http_grid.HttpGrid``)
sleeps a fixed 3 s between its pulls in ``send_and_receive``, so every
exchange of a round waits up to 3 s after its last reply is in.
:class:`PromptGrid` pushes and pulls through that same Grid and waits
``interval`` between pulls; everything else is the Grid's own. Each pull is
one request to the SuperLink, which hands over the replies that are in and
forgets them, so every reply pulled is kept, as Flower's loop does. The
in-memory Grid of a simulation already pulls every 0.1 s and is used as it
is (:func:`prompt`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

PULL_INTERVAL = 0.2  # seconds between pulls for replies (Flower's deployment Grid: 3)


class PromptGrid(Grid):
    """``grid`` with ``send_and_receive`` pulling every ``interval`` seconds."""

    def __init__(self, grid: Grid, interval: float = PULL_INTERVAL) -> None:
        self.grid, self.interval = grid, interval

    def set_run(self, run: Any) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Any:
        return self.grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def get_nodes(self) -> Iterable[Any]:
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        waiting = {i for i in self.push_messages(messages) if i}
        end = None if timeout is None else time.time() + timeout
        replies: list[Message] = []
        while waiting and (end is None or time.time() < end):
            pulled = list(self.pull_messages(waiting))
            replies += pulled
            waiting -= {m.metadata.reply_to_message_id for m in pulled}
            if waiting:
                time.sleep(self.interval)
        return replies

    def __getattr__(self, name: str) -> Any:  # anything else a Grid of this Flower has (close, ...)
        return getattr(self.grid, name)


def prompt(grid: Grid) -> Grid:
    """The Grid the ServerApp uses: a deployment's wrapped, a simulation's as it is."""
    if type(grid).__name__ == "InMemoryGrid":
        return grid
    return PromptGrid(grid)
