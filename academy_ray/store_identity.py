"""Detects a per-node (or per-process) checkpoint store seen from somewhere it does not reach.

A ``file://`` store is a folder on one node's disk unless that folder is shared (NFS and the like,
mounted at the same path everywhere); a ``memory://`` store lives in one process. An agent that is
re-placed to another node, or restarted in a new process, would find such a store empty and start
fresh, silently losing its state. So the first activation in a Ray cluster records the store's id
(:meth:`academy_ray.store.CheckpointStore.identity`) and its node in Ray's key-value store, and every
later one compares: a different id seen from another node means that node does not see the same storage.
(A different id on the node that recorded it means the folder was emptied or replaced there on purpose:
the new id is recorded.)
"""

from __future__ import annotations

import json
import logging

from academy_ray.exception import StoreNotSharedError
from academy_ray.store import CheckpointStore

logger = logging.getLogger(__name__)

KV_NAMESPACE = "academy-ray-stores"


def check_store_reachable(store: CheckpointStore, node_id: str) -> None:
    """Raises if ``store`` is node- or process-local and is not the storage first used in this cluster.

    Shared stores (S3 and other object stores) are never checked. Call from a Ray worker or driver.

    Args:
        store: The agent's checkpoint store.
        node_id: This node's Ray id (named in the error).

    Raises:
        StoreNotSharedError: Another node or process recorded a different store at this URI first.
    """
    if not (store.local or store.in_memory):
        return
    from ray.experimental import internal_kv

    key = f"{store.uri}".encode()
    mine = {"id": store.identity(), "node": node_id}
    internal_kv._internal_kv_put(key, json.dumps(mine), overwrite=False, namespace=KV_NAMESPACE)
    raw = internal_kv._internal_kv_get(key, namespace=KV_NAMESPACE)
    first = json.loads(raw) if raw else mine
    if first["id"] == mine["id"]:
        return
    if first["node"] == node_id:
        # Same node, another folder: it was emptied or replaced here on purpose; remember the new one.
        logger.warning(
            "checkpoint store %s was replaced on node %s; recording its new id", store.uri, node_id
        )
        internal_kv._internal_kv_put(key, json.dumps(mine), overwrite=True, namespace=KV_NAMESPACE)
        return
    kind = (
        "memory:// store lives in one process" if store.in_memory else "file:// folder is per node"
    )
    raise StoreNotSharedError(
        f"checkpoint store {store.uri} here (node {node_id}) is not the storage this cluster's agents "
        f"checkpointed to (first used on node {first['node']}): a {kind}, so this agent cannot see its "
        "checkpoints and would start empty. Use shared storage (s3://, or a folder shared by every node "
        "at the same path)"
    )
