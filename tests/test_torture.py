"""Kill torture (``_torture.py``): writers of both stores, rollbacks and compactions on shared
sessions while a supervisor SIGKILLs a random worker every few milliseconds.

``test_kill_torture`` is CI's short run (``TURNLOG_TORTURE_CI_KILLS``, 600 kills by default);
``make torture`` runs the long one. The other tests show that the check is exact: each damages
a finished run's files in one way a store could (a lost, duplicated, glued, reordered, torn,
blank or misplaced line; an append a rollback swallowed; a removed message brought back) and the
check must name it; the order search and the log reader are tested on hand-written logs.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import _spec
import _torture
from conftest import require_native

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CI_KILLS = int(os.environ.get("TURNLOG_TORTURE_CI_KILLS", "600"))
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_torture.py")


def run_torture(workspace: Path, kills: int, *extra: str) -> dict:
    out = workspace.parent / (workspace.name + ".json")
    command = [sys.executable, SCRIPT, "--kills", str(kills), "--workspace", str(workspace)]
    result = subprocess.run(
        [*command, "--json", str(out), "--max-seconds", "150", *extra],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]
    if "--no-check" in extra:
        assert result.returncode == 0, result.stdout + result.stderr[-3000:]
        return json.loads(result.stdout.splitlines()[-1])
    figures = json.loads(out.read_text())
    assert result.returncode == (1 if figures["problems"] else 0)
    return figures


def test_kill_torture(tmp_path):
    require_native()
    figures = run_torture(tmp_path / "ws", CI_KILLS)
    print("\n" + json.dumps({k: v for k, v in figures.items() if k != "problems"}))
    assert figures["problems"] == []
    assert figures["kills"] == CI_KILLS
    assert figures["lost"] == 0
    assert figures["duplicates"] == 0
    # The run did real work between the kills: without it the zeros above would prove nothing.
    # (Floors well under what a calm machine does, 6x/4x/1/20 of the kills: a loaded CI machine
    # does less between kills, and how much is not what this test is about.)
    assert figures["messages_acked"] >= CI_KILLS
    assert figures["messages_attempted"] > figures["messages_acked"]  # appends were in flight
    assert figures["rollback_ops_acked"] >= CI_KILLS // 2
    assert figures["compactions_acked"] >= CI_KILLS // 100
    assert figures["stray_temp_files"] > 0  # rewrites were killed midway too
    # Rollbacks raced with other processes' appends and took some of their messages away.
    assert figures["contended_appends_acked"] >= CI_KILLS // 10
    assert figures["rollbacks_racing_appends"] >= CI_KILLS // 60
    assert figures["removed_by_other_rollbacks"] >= CI_KILLS // 20


# --- the check finds what is wrong ----------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A short run's workspace, not yet checked."""
    require_native()
    workspace = tmp_path_factory.mktemp("torture") / "ws"
    figures = run_torture(workspace, 120, "--no-check", "--seed", "7")
    assert figures["kills"] == 120
    return workspace


def damaged_copy(finished_run: Path, tmp_path: Path, damage) -> list[str]:
    """Copy the run, let ``damage(path_of)`` change it, and return the check's problems."""
    workspace = tmp_path / "ws"
    shutil.copytree(finished_run, workspace, symlinks=True)
    from turnlog.pure import SessionStore

    store = SessionStore(workspace)
    damage(lambda key: _spec.session_path(store, key))
    return _torture.check(str(workspace), 4, 2, 2)["problems"]


def writers_of(path: Path) -> _torture.Writers:
    """What the writers' logs say, in the run whose session file is ``path``."""
    book = _torture.Writers()
    logs = path.parent.parent / "logs"
    for writer in range(4):
        book.read(writer, _torture.read_log(str(logs / f"w{writer}.log")))
    return book


def acknowledged(path: Path) -> set[tuple[int, int]]:
    """The acknowledged ``(writer, seq)`` of the run whose session file is ``path``."""
    return writers_of(path).acked


def message_lines(data: bytes, acked: set) -> list[tuple[int, int, int]]:
    """``(line index, writer, seq)`` of each acknowledged message's line in a shared session."""
    found = []
    for index, line in enumerate(data.split(b"\n")):
        head = _torture._HEAD.match(line)
        if head and (int(head.group(1)), int(head.group(2))) in acked:
            found.append((index, int(head.group(1)), int(head.group(2))))
    return found


def edit_lines(path: Path, edit) -> None:
    """Let ``edit(lines, found)`` change the file's lines; ``found`` are the acknowledged ones."""
    lines = path.read_bytes().split(b"\n")
    edit(lines, message_lines(b"\n".join(lines), acknowledged(path)))
    path.write_bytes(b"\n".join(lines))


def busiest(path_of) -> Path:
    """The shared session with the most messages."""
    return max((path_of(key) for key in _torture.SHARED), key=lambda p: p.stat().st_size)


def test_the_undamaged_run_passes(finished_run, tmp_path):
    assert damaged_copy(finished_run, tmp_path, lambda path_of: None) == []


def test_a_lost_message_is_found(finished_run, tmp_path):
    def damage(path_of):
        edit_lines(busiest(path_of), lambda lines, found: lines.pop(found[len(found) // 2][0]))

    problems = damaged_copy(finished_run, tmp_path, damage)
    assert len(problems) == 1 and problems[0].startswith("lost: acknowledged"), problems


def test_a_duplicate_is_found(finished_run, tmp_path):
    def damage(path_of):
        def edit(lines, found):
            index = found[len(found) // 2][0]
            lines.insert(index + 1, lines[index])

        edit_lines(busiest(path_of), edit)

    problems = damaged_copy(finished_run, tmp_path, damage)
    assert any(p.startswith("duplicate:") for p in problems), problems


def test_glued_lines_are_found(finished_run, tmp_path):
    def damage(path_of):
        def edit(lines, found):
            index = found[len(found) // 2][0]
            lines[index : index + 2] = [lines[index] + lines[index + 1]]

        edit_lines(busiest(path_of), edit)

    problems = damaged_copy(finished_run, tmp_path, damage)
    assert any("neither a message nor a torn fragment" in p for p in problems), problems


def test_a_reordering_is_found(finished_run, tmp_path):
    def damage(path_of):
        def edit(lines, found):
            by_writer: dict[int, list[int]] = {}
            for index, writer, _ in found:
                by_writer.setdefault(writer, []).append(index)
            first, second = max(by_writer.values(), key=len)[:2]
            lines[first], lines[second] = lines[second], lines[first]

        edit_lines(busiest(path_of), edit)

    problems = damaged_copy(finished_run, tmp_path, damage)
    assert any("out of order" in p for p in problems), problems


def test_a_torn_acknowledged_message_is_found(finished_run, tmp_path):
    def damage(path_of):
        def edit(lines, found):
            index = found[0][0]
            lines[index] = lines[index][: len(lines[index]) // 2]

        edit_lines(busiest(path_of), edit)

    problems = damaged_copy(finished_run, tmp_path, damage)
    assert any(p.startswith("lost: acknowledged") for p in problems), problems
    assert any("neither a message nor a torn fragment" in p for p in problems), problems


def test_a_message_in_the_wrong_session_is_found(finished_run, tmp_path):
    def damage(path_of):
        source = busiest(path_of)
        target = next(path_of(k) for k in _torture.SHARED if path_of(k) != source)
        moved = []
        edit_lines(source, lambda lines, found: moved.append(lines.pop(found[0][0])))
        data = target.read_bytes()
        target.write_bytes(
            data[: data.index(b"\n") + 1] + moved[0] + b"\n" + data[data.index(b"\n") + 1 :]
        )

    problems = damaged_copy(finished_run, tmp_path, damage)
    assert any("was never sent here" in p for p in problems), problems
    assert any(p.startswith("lost: acknowledged") for p in problems), problems


def test_a_blank_line_is_found(finished_run, tmp_path):
    def damage(path_of):
        edit_lines(busiest(path_of), lambda lines, found: lines.insert(found[0][0] + 1, b""))
        path = path_of(_torture.rollback_key(1))
        path.write_bytes(_spec.append(path.read_bytes(), b"\n"))  # "\n\n" at the end

    problems = damaged_copy(finished_run, tmp_path, damage)
    assert sum(p.endswith(" is blank") for p in problems) == 2, problems
    assert any(p.startswith("rollback-1: line ") for p in problems), problems


# --- rollback sessions ----------------------------------------------------------------------------


def rollback_session(path_of, index: int) -> tuple[list[_torture.Op], dict, list]:
    """A rollback session of the run: the calls of its rollbacker, the call that wrote each
    message (any worker), and ``(line index, message)`` of each message line of the file."""
    path = path_of(_torture.rollback_key(index))
    me = _torture.ROLLBACK_BASE + index
    log = _torture.read_log(str(path.parent.parent / "logs" / f"r{index}.log"))
    mine = _torture.read_rollbacks(me, log).ops
    number = len(_torture.SHARED) + index
    calls = [op for (_, s), ops in writers_of(path).ops.items() if s == number for op in ops]
    wrote = {item: op for op in calls + mine if op.kind in ("P", "U") for item in op.items}
    found = []
    for position, line in enumerate(path.read_bytes().split(b"\n")):
        kind = _torture.classify(line, {})
        if kind is not None and kind[0] == "msg":
            found.append((position, kind[1:]))
    return mine, wrote, found


def damage_a_rollback_session(finished_run, tmp_path, pick) -> tuple[str, list[str]]:
    """Copy the run, damage the first rollback session for which ``pick(mine, wrote, found)``
    (see ``rollback_session``) returns an edit of the file's bytes; return the session's key and
    the check's problems."""
    damaged: list[str] = []

    def damage(path_of):
        for index in range(2):
            edit = pick(*rollback_session(path_of, index))
            if edit is not None:
                path = path_of(_torture.rollback_key(index))
                path.write_bytes(edit(path.read_bytes()))
                damaged.append(_torture.rollback_key(index))
                return
        raise AssertionError("no rollback session has such a message: make the run longer")

    problems = damaged_copy(finished_run, tmp_path, damage)
    return damaged[0], problems


def test_an_append_swallowed_by_a_rollback_is_found(finished_run, tmp_path):
    """Another writer's acknowledged message gone from a rollback session where no rollback ran
    between its append and the next surviving message's: no rollback can have removed it."""

    def pick(mine, wrote, found):
        rollbacks = [op for op in mine if op.kind in ("R", "U")]
        swallowed = [
            position
            for (position, item), (_, after) in itertools.pairwise(found)
            if item[0] < _torture.ROLLBACK_BASE
            and wrote[item].acked
            and not any(op.t1 > wrote[item].t0 and op.t0 < wrote[after].t1 for op in rollbacks)
        ]
        if swallowed:
            return lambda data: b"\n".join(
                line for n, line in enumerate(data.split(b"\n")) if n != swallowed[0]
            )
        return None

    key, problems = damage_a_rollback_session(finished_run, tmp_path, pick)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{key}: no order of the logged calls"), problems


def test_a_removed_message_brought_back_is_found(finished_run, tmp_path):
    """A message the rollbacker wrote, that is gone, back at the end: it was written before a
    message that stays there was, so no order leaves it after that one."""

    def pick(mine, wrote, found):
        present = {item for _, item in found}
        gone = [
            item
            for op in mine
            if op.kind == "P" and op.acked
            for item in op.items
            if item not in present and any(wrote[m].t0 > op.t1 for m in present)
        ]
        return (lambda data: _spec.append(data, _torture.line_of(*gone[0]))) if gone else None

    key, problems = damage_a_rollback_session(finished_run, tmp_path, pick)
    assert problems and all(p.startswith(f"{key}: no order") for p in problems), problems


def test_a_reordering_in_a_rollback_session_is_found(finished_run, tmp_path):
    """Two neighbouring messages swapped, the first written before the second was begun."""

    def pick(mine, wrote, found):
        pairs = [
            (first, second)
            for (first, a), (second, b) in itertools.pairwise(found)
            if wrote[a].t1 < wrote[b].t0
        ]
        if not pairs:
            return None

        def swap(data: bytes) -> bytes:
            lines = data.split(b"\n")
            first, second = pairs[0]
            lines[first], lines[second] = lines[second], lines[first]
            return b"\n".join(lines)

        return swap

    key, problems = damage_a_rollback_session(finished_run, tmp_path, pick)
    assert problems and all(p.startswith(f"{key}: no order") for p in problems), problems


def test_a_stranger_in_a_rollback_session_is_found(finished_run, tmp_path):
    """A message sent to a shared session, copied into a rollback session."""

    def damage(path_of):
        source = busiest(path_of)
        found = message_lines(source.read_bytes(), acknowledged(source))
        line = source.read_bytes().split(b"\n")[found[0][0]]
        path = path_of(_torture.rollback_key(0))
        path.write_bytes(_spec.append(path.read_bytes(), line + b"\n"))

    problems = damaged_copy(finished_run, tmp_path, damage)
    assert any(p.startswith("rollback-0: message") and "never sent here" in p for p in problems)
    assert any(p.startswith("rollback-0: no order") for p in problems), problems


# --- the order search and the log reader, on hand-written logs ------------------------------------

R, W = _torture.ROLLBACK_BASE, 0  # the rollbacker and a writer


def append(t0: int, t1: float, *seqs: int, who: int = W, acked: bool = True) -> _torture.Op:
    return _torture.Op("P", t0, t1, tuple((who, seq) for seq in seqs), acked)


def remove(t0: int, t1: float, result: bool = True, acked: bool = True) -> _torture.Op:
    return _torture.Op("R", t0, t1, (), acked, result)


def decided(rollbacker: list, writer: list, *finals: list) -> list[bool]:
    """For each candidate final file, whether the search finds an order leaving it."""
    return [_torture.linearize([rollbacker, writer], final).found for final in finals]


def test_the_order_search_decides_exactly():
    r1, w1, w2, w3 = (R, 1), (W, 1), (W, 2), (W, 3)
    # In turn: r1 appended, then w1, then a remove_last: it took w1, the newest.
    turns = [append(0, 1, 1, who=R), remove(4, 5)], [append(2, 3, 1)]
    assert decided(*turns, [r1], [w1], [r1, w1], []) == [True, False, False, False]
    # The remove_last overlaps w1's append: either went first, one of the two is gone.
    race = [append(0, 1, 1, who=R), remove(2, 5)], [append(3, 4, 1)]
    assert decided(*race, [r1], [w1], [r1, w1], []) == [True, True, False, False]
    # In flight (killed at 10): it may not have happened at all, but it removed one at most.
    killed = [append(0, 1, 1, who=R), remove(2, 10, acked=False)], [append(3, 4, 1)]
    assert decided(*killed, [r1, w1], [r1], [w1], []) == [True, True, True, False]
    # A remove_last that found nothing ran while the session was empty.
    assert decided([remove(2, 3, result=False)], [append(0, 1, 1)], [w1]) == [False]
    assert decided([remove(0, 3, result=False)], [append(1, 2, 1)], [w1]) == [True]
    # update_last replaces the newest: w1, appended before it began.
    update = (
        [append(0, 1, 1, who=R), _torture.Op("U", 4, 5, ((R, 2),), True, True)],
        [append(2, 3, 1)],
    )
    assert decided(*update, [r1, (R, 2)], [r1, w1, (R, 2)], [(R, 2)]) == [True, False, False]
    # Of a batch in flight, any prefix may have landed, and nothing else.
    batch = [], [append(0, 9, 1, 2, 3, acked=False)]
    outcomes = [], [w1], [w1, w2], [w1, w2, w3], [w2], [w1, w3], [w1, w1]
    assert decided(*batch, *outcomes) == [True] * 4 + [False] * 3
    # A load sees the session as it was at one moment within its call.
    loaded = [append(0, 1, 1, who=R), _torture.Op("S", 2, 3, (w1, r1), True)], [append(0, 1, 1)]
    assert decided(*loaded, [w1, r1], [r1, w1]) == [True, False]
    wrong = [append(0, 1, 1, who=R), _torture.Op("S", 2, 3, (r1,), True)], [append(0, 1, 1)]
    assert decided(*wrong, [w1, r1], [r1, w1]) == [False, False]
    # How far the best attempt got: r1's append, then w1 cannot go above a message to remove.
    search = _torture.linearize(list(turns), [w1])
    assert (search.found, search.done, search.reached) == (False, 1, 0)


def test_logs_are_read_with_calls_in_flight_and_lines_cut_short(tmp_path):
    rollbacker = tmp_path / "r0.log"
    rollbacker.write_bytes(
        b"L 100 0\t\nI 110 A 5\t\nA 120 5\t\nI 130 R\t\n"  # killed in remove_last
        b"L 200 1\t\nI 210 S\t\nS 220 [[0,7],[100,5]]\t\nI 230 U 1000000\t\n"
        b"U 240 1000000 1\t\nI 250 R\t\nR 2\nI 270 A 1000001\t\n"  # an ack cut short
    )
    found = _torture.read_rollbacks(R, _torture.read_log(str(rollbacker)))
    assert found.ops == [
        _torture.Op("P", 110, 120, ((R, 5),), True),
        _torture.Op("R", 130, 200, (), False),
        _torture.Op("S", 210, 220, ((0, 7), (R, 5)), True),
        _torture.Op("U", 230, 240, ((R, 1000000),), True, True),
        _torture.Op("R", 250, 270, (), False),
        _torture.Op("P", 270, math.inf, ((R, 1000001),), False),
    ]
    assert (found.sent, found.torn, found.acked) == ({5, 1000000, 1000001}, {1000001}, 1)
    writer = tmp_path / "w1.log"
    writer.write_bytes(
        b"L 100 0\t\nI 110 3 0 2\t\nA 120 0\t\nI 130 0 2 1\t\nL 150 1\t\nI 160 4 1000000 1\t\n"
    )
    book = _torture.Writers()
    book.read(1, _torture.read_log(str(writer)))
    assert book.ops == {
        (1, 3): [_torture.Op("P", 110, 120, ((1, 0), (1, 1)), True)],
        (1, 0): [_torture.Op("P", 130, 150, ((1, 2),), False)],
        (1, 4): [_torture.Op("P", 160, math.inf, ((1, 1000000),), False)],
    }
    assert book.acked == {(1, 0), (1, 1)}
