"""A deterministic, realistic session file for the benchmarks and the demo.

``ensure_corpus(path, n)`` writes ``n`` valid messages (as turnlog writes them) mixed with 5%
corrupt lines of every kind, ending in a torn line, and reuses the file on later runs. Run
``python benches/corpus.py --messages N`` to build one and print its size.

``text="nonascii"`` (``--text nonascii``) writes the same kind of file with a Telegram-like mix
instead: mostly Cyrillic, CJK and emoji, little English.
"""

# Non-Latin text is the point of this corpus, so confusable letters are expected.
# ruff: noqa: RUF001

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CORRUPT_KINDS", "TEXTS", "Corpus", "bench_dir", "corpus_path", "ensure_corpus"]

DEFAULT_SEED = 20240601
#: Bump when the generator changes, so cached files are rebuilt.
FORMAT_VERSION = 1
CORRUPT_SHARE = 0.05
POOL_MESSAGES = 4096
POOL_CORRUPT_PER_KIND = 48
CHUNK_LINES = 1 << 16

CORRUPT_KINDS = (
    "blank",
    "garbage text",
    "truncated JSON",
    "invalid UTF-8",
    "JSON array",
    "wrong type",
    "missing field",
    "lone surrogate",
    "trailing junk",
    "NaN literal",
    "duplicate key",
    "NUL bytes",
)

ROLES = ("user", "assistant", "system", "tool")
ROLE_WEIGHTS = (40, 45, 5, 10)

# Sentences in the scripts a chat bot sees; the emoji include ZWJ and skin-tone sequences.
ENGLISH = (
    "Could you summarise the meeting notes from Tuesday?",
    "Sure, here is a short summary of the key decisions.",
    "The deployment failed because the migration timed out.",
    "I have checked the logs and found two warnings about disk space.",
    "Let me know if you want me to draft a reply to the customer.",
    "The invoice total is 1,284.50 EUR including VAT.",
    "Remind me tomorrow at 9am to call the dentist.",
    "Here are three options, ranked by cost and effort.",
)
RUSSIAN = (
    "Привет! Как дела с отчётом за прошлый квартал?",
    "Да, я отправил файл коллегам вчера вечером.",
    "Пожалуйста, проверь ещё раз цифры в таблице.",
    "Встреча перенесена на четверг, в 15:00 по Москве.",
)
CJK = (
    "今日はいい天気ですね。午後から会議があります。",
    "请帮我把这段话翻译成英文，谢谢。",
    "这个问题我需要再确认一下数据。",
    "안녕하세요, 주문하신 상품이 발송되었습니다.",
)
EMOJI = ("👍", "🎉", "🙂", "🚀", "❤️", "👩‍💻", "👋🏽", "🇺🇦", "🤖", "✅")
# More of the same scripts for the non-ASCII mix, so its pool is not a handful of sentences.
CYRILLIC = (
    *RUSSIAN,
    "Добрий день! Коли буде готове замовлення номер 4821?",
    "Спасибо, всё получил. Завтра напишу подробнее 🙏",
    "Можешь объяснить, почему сборка падает на третьем шаге?",
    "Ок, тогда созвонимся в пятницу после обеда.",
)
CJK_MORE = (
    *CJK,
    "明日の会議は十時からです。資料を共有しますね。",
    "谢谢你的帮助！这个方案我觉得可以。",
    "배송 조회는 어디에서 할 수 있나요?",
    "この件について、もう少し詳しく教えてください。",
)
EMOJI_RUNS = (*EMOJI, "😂😂😂", "🔥🔥", "🙏", "😅", "👀", "💯", "🥲", "🤔")
ESCAPES = (
    'He said "ship it" and left.',
    "The file is at C:\\Users\\bot\\notes.txt",
    "name\tage\tcity",
    "line one\nline two\r\nline three",
    'regex: ^\\d+\\s*"[a-z]+"$',
    "a path with a slash / and a backslash \\",
)
CODE_BLOCKS = (
    '```python\ndef greet(name: str) -> str:\n    return f"Hello, {name}!"\n```',
    '```json\n{"role": "user", "content": "hi\\n"}\n```',
    '```bash\nfor f in *.jsonl; do\n\twc -l "$f"\ndone\n```',
    '```rust\nfn main() {\n    println!("{}", "\\\\ escaped");\n}\n```',
)
GARBAGE = (
    "ERROR 2024-03-02T10:11:12Z connection reset by peer",
    "<<<<<<< HEAD",
    "Traceback (most recent call last):",
    "}",
    "role=user content=hello",
    "undefined",
    "-- Лог обрезан --",
    "\u00ff\u00fe garbage",
)

#: The text mixes, as (cumulative share, sentences) for each script a message's parts come from.
#: "mixed" is the default corpus: it must stay as it is (cached files and published figures
#: depend on its bytes), so its shares and its order of random draws never change.
MIXES: dict[str, tuple[tuple[float, tuple[str, ...]], ...]] = {
    "mixed": (
        (0.55, ENGLISH),
        (0.70, RUSSIAN),
        (0.80, CJK),
        (0.88, EMOJI),
        (0.95, ESCAPES),
        (1.0, CODE_BLOCKS),
    ),
    # A Telegram bot's chats: mostly Cyrillic, CJK and emoji (2-4 bytes a character).
    "nonascii": (
        (0.45, CYRILLIC),
        (0.75, CJK_MORE),
        (0.90, EMOJI_RUNS),
        (0.96, ENGLISH),
        (0.98, ESCAPES),
        (1.0, CODE_BLOCKS),
    ),
}
TEXTS = tuple(MIXES)


@dataclass
class Corpus:
    """A corpus file and what is in it."""

    path: Path
    messages: int
    seed: int = DEFAULT_SEED
    lines: int = 0
    size: int = 0
    corrupt: dict[str, int] = field(default_factory=dict)
    text: str = "mixed"

    @property
    def corrupt_lines(self) -> int:
        """All corrupt lines, the torn last one included."""
        return sum(self.corrupt.values())


def bench_dir() -> Path:
    """Where corpora are cached: ``$TURNLOG_BENCH_DIR`` or ``<repo>/bench-data``."""
    default = Path(__file__).resolve().parent.parent / "bench-data"
    path = Path(os.environ.get("TURNLOG_BENCH_DIR") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


def corpus_path(n: int, seed: int = DEFAULT_SEED, text: str = "mixed") -> Path:
    """The default cache path of the ``n``-message corpus of the ``text`` mix."""
    prefix = "corpus" if text == "mixed" else f"corpus-{text}"
    return bench_dir() / f"{prefix}-{n}-{seed}.jsonl"


def encode(obj: dict[str, Any]) -> bytes:
    """A line exactly as turnlog writes it."""
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


# --- the pool -----------------------------------------------------------------------------------


def _text(rng: random.Random, length: int, text: str = "mixed") -> str:
    """About ``length`` characters of chat text in the ``text`` mix (see ``MIXES``)."""
    parts: list[str] = []
    total = 0
    mix = MIXES[text]
    while total < length:
        pick = rng.random()
        pool = next(pool for share, pool in mix if pick < share)
        part = rng.choice(pool)
        if pool is CODE_BLOCKS:
            part = "\n\n" + part + "\n\n"
        parts.append(part)
        total += len(part) + 1
    return " ".join(parts)[:length]


def _message(rng: random.Random, text: str = "mixed") -> dict[str, Any]:
    size = rng.random()
    if size < 0.95:
        length = rng.randint(20, 300)
    elif size < 0.995:
        length = rng.randint(1_000, 4_000)
    else:
        length = rng.randint(10_000, 30_000)
    role = rng.choices(ROLES, ROLE_WEIGHTS)[0]
    obj: dict[str, Any] = {"role": role, "content": _text(rng, length, text)}
    if role == "tool" and rng.random() < 0.3:
        obj["name"] = rng.choice(("web_search", "calculator", "calendar"))
        obj["tool_call_id"] = f"call_{rng.getrandbits(48):012x}"
    elif role == "user" and rng.random() < 0.02:
        obj["name"] = rng.choice(("alice", "борис", "小明"))
    return obj


def _corrupt(rng: random.Random, kind: str, valid: bytes) -> bytes:
    """One corrupt line of ``kind`` (newline included); ``valid`` is a valid line to damage."""
    body = valid[:-1]
    short = rng.choice(ENGLISH)
    options: list[bytes]
    if kind == "blank":
        options = [b"", b"   ", b"\t", b"\r"]
    elif kind == "garbage text":
        options = [rng.choice(GARBAGE).encode()]
    elif kind == "truncated JSON":
        options = [body[: rng.randrange(1, len(body))]]
    elif kind == "invalid UTF-8":
        cut = rng.randrange(len(b'{"role":"user","content":"'), len(body) - 2)
        options = [body[:cut] + b"\xff\xfe" + body[cut:], b'{"role":"user","content":"caf\xe9"}']
    elif kind == "JSON array":
        options = [b'["user","hello"]', b'[{"role":"user","content":"hi"}]', b"[]"]
    elif kind == "wrong type":
        options = [
            b'{"role":1,"content":"hi"}',
            b'{"role":"user","content":null}',
            b'{"role":"user","content":[{"type":"text","text":"hi"}]}',
            b'{"role":true,"content":42}',
            b'{"role":"assistant","content":{"text":"hi"}}',
        ]
    elif kind == "missing field":
        options = [b'{"role":"user"}', b'{"content":"' + short.encode() + b'"}', b"{}"]
    elif kind == "lone surrogate":
        options = [
            b'{"role":"user","content":"abc\\ud800def"}',
            b'{"role":"assistant","content":"\\udc00"}',
            b'{"role":"user","content":"cut emoji \\ud83d"}',
        ]
    elif kind == "trailing junk":
        options = [body + b" junk", body + b"}", body + b",", body + body]
    elif kind == "NaN literal":
        options = [
            b'{"role":"user","content":"x","score":NaN}',
            b'{"role":"tool","content":"y","value":Infinity}',
            b'{"role":"tool","content":"z","value":-Infinity}',
        ]
    elif kind == "duplicate key":
        options = [
            b'{"role":"user","content":"a","content":"b"}',
            b'{"role":"user","role":"assistant","content":"' + short.encode() + b'"}',
        ]
    elif kind == "NUL bytes":
        # What a file system leaves after a crash: a run of zeros where a write was planned.
        options = [b"\x00" * rng.randint(1, 64), b'{"role":"user","content":"a\x00b"}']
    else:
        raise ValueError(kind)
    return rng.choice(options) + b"\n"


def _check(valid: list[bytes], corrupt: list[tuple[str, bytes]]) -> None:
    """Fail early if a pool line is not what it claims to be under turnlog's own rules."""
    from turnlog.backends import format as _format

    for line in valid:
        if _format.encode_message(json.loads(line)) != line:
            raise AssertionError(f"not turnlog's encoding: {line[:80]!r}")
    for kind, line in corrupt:
        if b"\n" in line[:-1] or _format.valid_text(line[:-1]) is not None:
            raise AssertionError(f"{kind} line is valid or has a newline: {line[:80]!r}")


def _pools(rng: random.Random, text: str) -> tuple[list[bytes], list[tuple[str, bytes]]]:
    valid = [encode(_message(rng, text)) for _ in range(POOL_MESSAGES)]
    short = [line for line in valid if len(line) < 400]
    corrupt = [
        (kind, _corrupt(rng, kind, rng.choice(short)))
        for kind in CORRUPT_KINDS
        for _ in range(POOL_CORRUPT_PER_KIND)
    ]
    _check(valid, corrupt)
    return valid, corrupt


# --- the file -----------------------------------------------------------------------------------


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def _cached(path: Path, n: int, seed: int, text: str) -> Corpus | None:
    try:
        meta = json.loads(_meta_path(path).read_text())
        size = path.stat().st_size
    except (OSError, ValueError):
        return None
    if meta.get("version") != FORMAT_VERSION or meta.get("messages") != n:
        return None
    if meta.get("seed") != seed or meta.get("size") != size:
        return None
    if meta.get("text", "mixed") != text:
        return None
    return Corpus(path, n, seed, meta["lines"], size, meta["corrupt"], text)


def write_corpus(path: Path, n: int, seed: int = DEFAULT_SEED, text: str = "mixed") -> Corpus:
    """Write the corpus (``n`` valid messages, 5% corrupt lines, a torn tail) to ``path``."""
    if text not in MIXES:
        raise ValueError(f"text must be one of {TEXTS}, not {text!r}")
    rng = random.Random(seed)
    valid, corrupt = _pools(rng, text)
    kinds: Counter[str] = Counter()
    lines = 0
    temp = path.with_name(path.name + ".tmp")
    with open(temp, "wb", buffering=1 << 22) as out:
        remaining = n
        while remaining:
            k = min(CHUNK_LINES, remaining)
            bad = round(k * CORRUPT_SHARE / (1 - CORRUPT_SHARE))
            picked = rng.choices(corrupt, k=bad)
            kinds.update(kind for kind, _ in picked)
            chunk = rng.choices(valid, k=k) + [line for _, line in picked]
            rng.shuffle(chunk)  # spreads the corrupt lines through the chunk
            out.write(b"".join(chunk))
            lines += len(chunk)
            remaining -= k
        # A crash mid-write leaves the last line cut short, with no newline.
        torn = rng.choice(valid)
        out.write(torn[: len(torn) // 2])
        kinds["torn tail"] += 1
        lines += 1
    os.replace(temp, path)
    size = path.stat().st_size
    corpus = Corpus(path, n, seed, lines, size, dict(sorted(kinds.items())), text)
    # The default mix's sidecar stays as it was, so files cached before the mixes still count.
    skip = {"path", "text"} if text == "mixed" else {"path"}
    meta = {k: v for k, v in asdict(corpus).items() if k not in skip}
    _meta_path(path).write_text(json.dumps({"version": FORMAT_VERSION, **meta}, indent=1))
    return corpus


def ensure_corpus(
    path: Path | None = None, n: int = 100_000, seed: int = DEFAULT_SEED, text: str = "mixed"
) -> Corpus:
    """The corpus at ``path`` (default: the cache dir), written only if not already there."""
    path = Path(path) if path is not None else corpus_path(n, seed, text)
    return _cached(path, n, seed, text) or write_corpus(path, n, seed, text)


def main() -> None:
    """Build (or find) a corpus and print its size."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--text", choices=TEXTS, default="mixed", help="the scripts' mix")
    args = parser.parse_args()
    start = time.perf_counter()
    corpus = ensure_corpus(n=args.messages, seed=args.seed, text=args.text)
    elapsed = time.perf_counter() - start
    print(
        f"{corpus.path}: {corpus.messages:,} messages, {corpus.lines:,} lines "
        f"({corpus.corrupt_lines:,} corrupt), {corpus.size / 1e6:,.1f} MB, {elapsed:.1f} s"
    )


if __name__ == "__main__":
    main()
