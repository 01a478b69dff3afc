"""Chat exports that keep a tree of messages (edits and regenerations are sibling branches): the branch
the person kept is the path from its last message up to the root."""

from __future__ import annotations

from typing import Any


def branch_to(nodes: dict[str, Any], leaf: Any, parent_key: str) -> tuple[list[dict[str, Any]], str | None]:
    """The nodes from the root down to ``leaf``, following ``parent_key``, and a problem: "cycle" (then no
    nodes), the id of a parent that is not in ``nodes`` (the branch below it is kept), or None."""
    branch: list[dict[str, Any]] = []
    seen: set[str] = set()
    node_id = leaf
    while node_id is not None:
        if node_id in seen:
            return [], "cycle"
        seen.add(node_id)
        node = nodes.get(node_id) if isinstance(node_id, str) else None
        if not isinstance(node, dict):
            return branch[::-1], str(node_id)
        branch.append(node)
        node_id = node.get(parent_key)
    return branch[::-1], None
