"""What a ``spawn`` or ``forkserver`` child runs: a store it was handed (pickled) appends."""

from __future__ import annotations


def append_from_child(store, key: str, count: int) -> int:
    for i in range(count):
        store.append(key, {"role": "user", "content": f"child {i}"})
    return len(store.load(key))
