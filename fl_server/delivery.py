"""A cheaper delivery sweep for Flower 1.42's simulation engine (version-guarded).

The simulation hands instructions to its virtual nodes from one thread that,
every 0.1 s, asks the in-memory LinkState for each node's next instruction
(``flwr/server/superlink/fleet/vce/vce_api.py``, ``add_messages_to_queue``).
``InMemoryLinkState.get_message_ins`` answers by running its validity check
(expiry, federation membership: ``_check_stored_messages``) on *every*
stored instruction and keeping those addressed to the node: nodes x
instructions checks a sweep. With 1000 nodes sampled that is a million
checks every sweep, and the simulation process's CPU — more than the
clients' own at 1000 clients (docs/performance.md) — is taken from the
clients on a small machine.

:func:`install` replaces ``get_message_ins`` with one that finds the node's
undelivered instructions through an index by destination, rebuilt in one
pass whenever the store has changed, and runs Flower's own check on those
only. For a node it returns what Flower's returns, in the same order, and
marks them delivered alike; the difference is *when* an expired instruction
to another node is deleted: at that node's own turn of the sweep (every
node has one each sweep) rather than at any node's. The ServerApp installs
it when it is imported, in the process that runs it: a simulation's, where
this LinkState lives; a deployment's ServerApp process holds no LinkState,
and nothing changes there. Only Flower 1.42 (the code it mirrors); another
version is left alone. The upstream fix is the same index kept by
``store_message_ins`` and ``delete_messages`` (docs/performance.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("fedsense.server")

FLOWER = "1.42."  # the versions whose get_message_ins this mirrors
FLOWERS_OWN: list[Callable] = []  # Flower's get_message_ins, once replaced
INDEX = "_fedsense_pending_by_node"  # attribute of the LinkState: (store key, node -> instruction ids)


def pending_by_node(state: Any) -> dict[int, list[str]]:
    """Undelivered instruction ids by destination node, in store order;
    rebuilt when the store's size or newest key changed (an instruction
    added, or removed, since the last build). Ids that went stale since are
    left in and skipped by the caller's checks."""
    store = state.message_ins_store
    key = (len(store), next(reversed(store), None))
    cached = state.__dict__.get(INDEX)
    if cached is None or cached[0] != key:
        index: dict[int, list[str]] = {}
        for msg_id, msg in store.items():
            if msg.metadata.delivered_at == "":
                index.setdefault(msg.metadata.dst_node_id, []).append(msg_id)
        cached = (key, index)
        state.__dict__[INDEX] = cached
    return cached[1]


def get_message_ins(self: Any, node_id: int, limit: int | None, *, run_id: int | None = None) -> list:
    """``InMemoryLinkState.get_message_ins`` of Flower 1.42, through the index."""
    from flwr.supercore.date import now

    if limit is not None and limit < 1:
        raise AssertionError("`limit` must be >= 1")
    found = []
    with self.lock:
        for msg_id in list(pending_by_node(self).get(node_id, ())):
            self._check_stored_messages({msg_id})
            msg = self.message_ins_store.get(msg_id)
            if (msg is not None and msg.metadata.dst_node_id == node_id
                    and (run_id is None or msg.metadata.run_id == run_id) and msg.metadata.delivered_at == ""):
                found.append(msg)
            if limit and len(found) == limit:
                break
    delivered_at = now().isoformat()
    for msg in found:
        msg.metadata.delivered_at = delivered_at
    return found


def install() -> Callable | None:
    """Put :func:`get_message_ins` in place on Flower 1.42's InMemoryLinkState
    (once a process); returns Flower's own (None: another Flower, nothing done)."""
    import flwr
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

    if not flwr.__version__.startswith(FLOWER):
        log.info("Flower %s: the simulation's delivery sweep is left as it is (fl_server/delivery.py mirrors %sx)",
                 flwr.__version__, FLOWER)
        return None
    replaced = InMemoryLinkState.get_message_ins
    if replaced is not get_message_ins:
        FLOWERS_OWN.append(replaced)
        InMemoryLinkState.get_message_ins = get_message_ins  # type: ignore[method-assign]
    return FLOWERS_OWN[0]
