"""Batches of ops: a planner packs many ops into one queue message; the worker splits it before applying anything.

Splitting puts every op of the batch back on the ops queue as a message of its own, so each op is retried, deferred,
poisoned and replayed on its own, as if it had been sent alone. Should splitting fail part way, the batch is
delivered again and split again: the ops sent twice are the same ops (same version), and the worker applies an op
only once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sync.app.wiring.runtime import Runtime
from sync.contract.ops import ContactOp

log = logging.getLogger("ctcs.worker")


def split_batch(rt: Runtime, ops: Sequence[ContactOp]) -> int:
    """Send each op of a batch (as its message decoded it: `OpMessage.batch`, never empty) to the ops queue as its
    own message; returns how many. Raises the storage error when sending fails. A malformed batch never gets here:
    its entry point sends it to the poison queue whole."""
    rt.stores.ops.send_texts([op.to_json() for op in ops])
    log.info("split a batch of %d ops of pair %s (run %s)", len(ops), ops[0].pair_id, ops[0].run_id,
             extra={"pair_id": ops[0].pair_id, "run_id": ops[0].run_id, "outcome": "split", "ops": len(ops)})
    return len(ops)
