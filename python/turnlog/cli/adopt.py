"""``turnlog adopt --keys FILE``: give the keys a bot knows the files ZeroClaw wrote for them.

ZeroClaw's file names cannot be turned back into keys (``a:b`` and ``a/b`` both became
``a_b.jsonl``), so the keys come from the bot (one a line, for example exported from its user
table). Without ``--apply`` nothing changes: the plan is printed. Every other command leaves
ZeroClaw's files as they are; a store that adopts (the default) does what ``--apply`` does, one
key at a time, on the key's first call.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import SessionStore
from ..backends import format as _format
from .output import FAILURE, OK, USAGE, CliError, os_error, plural, quote, write, write_json
from .table import Progress, printable, render_table
from .workspace import open_workspace

__all__ = ["cmd_adopt", "read_keys"]


def read_keys(path: str) -> list[str]:
    """The keys of ``path``: one a line (``-``: stdin), without the line end (``\n`` or
    ``\r\n``: other Unicode line breaks may be part of a key) or a byte-order mark; blank
    lines and repeats skipped."""
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8-sig", newline="") as file:
                text = file.read()
    except UnicodeDecodeError as problem:
        raise CliError(f"{path} is not UTF-8 text: {problem}") from None
    except OSError as problem:
        raise CliError(f"cannot read {path}: {os_error(problem)}") from None
    keys = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            _format.key_to_name(line)
        except ValueError as problem:
            message = f"{path}:{number}: invalid session key {quote(line)}: {problem}"
            raise CliError(message, USAGE) from None
        keys.append(line)
    return list(dict.fromkeys(keys))


def _plan(store: SessionStore, keys: list[str]) -> list[dict[str, Any]]:
    """What adopting would do for each key: ``{"key", "file", "action"}``; the action is
    ``adopt`` (renamed to the key's name), ``keep`` (the file already has the key's name),
    ``own`` (the key has a file of its own: the legacy one stays), ``taken`` (an earlier key
    of the list takes it), or ``none`` (no legacy file for this key)."""
    legacy = store.zeroclaw_files()
    claimed: dict[str, str] = {}
    plan = []
    for key in keys:
        name = _format.zeroclaw_name(key)
        own = store.transcript_path(key)
        if name not in legacy:
            action = "none"
        elif name in claimed:
            action = "taken"
        elif own == legacy[name]:
            action = "keep"
        elif store.session_exists(key):
            action = "own"
        else:
            action = "adopt"
        if action in ("adopt", "keep"):
            claimed[name] = key
        file = name + _format.SUFFIX if name in legacy else None
        plan.append({"key": key, "file": file, "action": action, "by": claimed.get(name)})
    return plan


_SAYS = {
    "adopt": "adopt",
    "keep": "keep (its own name)",
    "own": "has its own file: left alone",
    "taken": "taken by an earlier key",
}


def cmd_adopt(args: argparse.Namespace) -> int:
    if args.backend != "jsonl":
        raise CliError(f"adopt: ZeroClaw's files are JSONL; --backend {args.backend}", USAGE)
    keys = read_keys(args.keys)
    with open_workspace(args, create=False) as workspace:
        store = workspace.store
        if not isinstance(store, SessionStore):
            raise CliError(f"no sessions in {workspace.where}")
        plan = _plan(store, keys)
        failed = 0
        if args.apply:
            todo = [step for step in plan if step["action"] in ("adopt", "keep")]
            with Progress("adopting", len(todo)) as progress:
                for step in todo:
                    try:
                        if not store.adopt_zeroclaw_file(step["key"]):
                            step["action"] = "taken"  # another process was first
                    except OSError as problem:
                        step["action"] = f"failed: {os_error(problem)}"
                        failed += 1
                    progress.advance()
        left = store.zeroclaw_files()
    counts = {action: sum(step["action"] == action for step in plan) for action in _SAYS}
    if args.json:
        write_json({"applied": args.apply, "keys": plan, "not_adopted": sorted(left)})
        return FAILURE if failed else OK
    says = {**_SAYS, "adopt": "adopted", "keep": "kept (its own name)"} if args.apply else _SAYS
    rows = [
        [printable(step["key"]), printable(step["file"]), says.get(step["action"], step["action"])]
        for step in plan
        if step["action"] != "none"
    ]
    out = render_table(["key", "ZeroClaw file", "what happens" if not args.apply else "done"], rows)
    verb = "adopted" if args.apply else "would adopt"
    summary = (
        f"{verb} {plural(counts['adopt'] + counts['keep'], 'file')} for "
        f"{plural(len(keys), 'key')} ({counts['keep']:,} under their own name); "
        f"{plural(sum(step['action'] == 'none' for step in plan), 'key')} without a ZeroClaw "
        "file; "
        f"{plural(len(left), 'ZeroClaw file')} not adopted"
    )
    if not args.apply and counts["adopt"] + counts["keep"]:
        summary += "; run again with --apply to adopt"
    write((out if rows else "") + summary + "\n")
    return FAILURE if failed else OK
