"""Hand-built Messages and Contexts for calling the ClientApp without a SuperLink."""

from __future__ import annotations

import time

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, Metadata, RecordDict

from fedsense import protocol
from fedsense.methods import METHODS
from fedsense.models import DataSpec, build_model
from fedsense.params import shared_arrays
from tests.conftest import SYNTHETIC


def device_context(pid: int, tmp_path, overrides: str = "") -> Context:
    """Simulated client ``pid`` of six on the synthetic config, plus ``overrides`` lines."""
    run_config = {
        protocol.RUN_CONFIG_FILE: str(SYNTHETIC),
        protocol.RUN_OVERRIDES: f"data.cache_dir={tmp_path / 'cache'}\n{overrides}",
    }
    node_config = {protocol.NODE_PARTITION_ID: pid, protocol.NODE_NUM_PARTITIONS: 6}
    return Context(run_id=1, node_id=100 + pid, node_config=node_config, state=RecordDict(), run_config=run_config)


def global_arrays(cfg_model, seed: int = 0) -> dict[str, np.ndarray]:
    """The shared arrays of a fresh synthetic-data model, as a server would send them."""
    spec = DataSpec({"acc": (3, 64), "gyro": (3, 64)}, num_classes=4)
    return shared_arrays(build_model(spec, cfg_model, seed=seed), METHODS["none"])


def server_message(kind: str, arrays: dict[str, np.ndarray] | None, server_round: int = 1) -> Message:
    """A ``kind`` message of round ``server_round`` carrying ``arrays``."""
    content = RecordDict(
        {protocol.CONFIG: ConfigRecord({protocol.CFG_ROUND: server_round, protocol.CFG_NUM_CLASSES: 4})}
    )
    if arrays is not None:
        content[protocol.ARRAYS] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    # Explicit metadata, as the runtime would set it (no SuperLink in this test).
    metadata = Metadata(
        run_id=1, message_id=f"msg-{kind}-{server_round}", src_node_id=0, dst_node_id=101,
        reply_to_message_id="", group_id=str(server_round), created_at=time.time(),
        ttl=3600.0, message_type=kind,
    )
    return Message(content=content, metadata=metadata)
