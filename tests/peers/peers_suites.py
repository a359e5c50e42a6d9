"""What ``run.py`` runs: the frameworks' sdists, the test files of theirs that build a reference
class, and the stand-in that takes that class's place in them.

Only tests that build (or are handed) the reference class run: the plugin deselects the others
in those files, as they never touch turnlog. Tests that build it but check something turnlog's
adapter cannot have are listed in ``not_applicable.py``, each with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sdist:
    name: str  # as on PyPI
    version: str
    sha256: str
    #: The module names whose installed copies must be the version above.
    modules: tuple[str, ...]

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def folder(self) -> str:
        """The folder the sdist unpacks to."""
        return f"{self.name.replace('-', '_')}-{self.version}"


OPENAI_AGENTS = Sdist(
    "openai-agents",
    "0.24.0",
    "4b4b285f4fed81fdf1b4ac426a9101658d9cd29b4fb1aaeee18f639b77e704e3",
    ("agents",),
)
LANGCHAIN_CORE = Sdist(
    "langchain-core",
    "1.8.3",
    "ce448f055dd2cf1db7def27d2b6c2902519369642e8b89d08255c7ca7abd6b36",
    ("langchain_core",),
)
# The newest langchain-community; it needs langchain-core>=1.4,<2 (1.8.3 here).
LANGCHAIN_COMMUNITY = Sdist(
    "langchain-community",
    "0.4.2",
    "a99308160d53d7e9b5965ee665e5173709914338210089fd5788ad724432c21e",
    ("langchain_community",),
)
SDISTS = (OPENAI_AGENTS, LANGCHAIN_CORE, LANGCHAIN_COMMUNITY)


@dataclass(frozen=True)
class Suite:
    name: str
    sdist: Sdist
    #: Test files (or folders), relative to the sdist's root.
    paths: tuple[str, ...]
    #: The reference classes replaced, by the name the tests use (see peers_standins.stand_in).
    swaps: tuple[str, ...]
    #: Framework modules whose attribute of that name is replaced too (for imports made inside a
    #: test); the defining modules are left alone, so the framework's own code is unchanged.
    packages: tuple[str, ...] = ()
    description: str = ""
    extra_args: tuple[str, ...] = field(default=())
    #: Scopes whose store is made when the test starts, not when first used: a store made on
    #: first use inside the event loop does blocking I/O there (which langchain's tests catch with
    #: blockbuster), where the reference class (an in-memory history) does none.
    eager_scopes: tuple[str, ...] = ()


_AGENT_PACKAGES = ("agents", "agents.memory", "agents.extensions.memory")

SUITES = (
    Suite(
        "agents-session",
        OPENAI_AGENTS,
        ("tests/memory/test_session.py", "tests/memory/test_session_limit.py"),
        ("SQLiteSession",),
        _AGENT_PACKAGES,
        "SQLiteSession's tests, and the Runner with a session and session limits",
    ),
    Suite(
        "agents-async-sqlite",
        OPENAI_AGENTS,
        ("tests/extensions/memory/test_async_sqlite_session.py",),
        ("AsyncSQLiteSession",),
        _AGENT_PACKAGES,
        "AsyncSQLiteSession's tests",
    ),
    Suite(
        "agents-sqlalchemy",
        OPENAI_AGENTS,
        ("tests/extensions/memory/test_sqlalchemy_session.py",),
        ("SQLAlchemySession",),
        _AGENT_PACKAGES,
        "SQLAlchemySession's tests",
    ),
    Suite(
        "agents-redis",
        OPENAI_AGENTS,
        ("tests/extensions/memory/test_redis_session.py",),
        ("RedisSession",),
        _AGENT_PACKAGES,
        "RedisSession's tests",
    ),
    Suite(
        "agents-encrypted",
        OPENAI_AGENTS,
        ("tests/extensions/memory/test_encrypt_session.py",),
        ("SQLiteSession",),
        _AGENT_PACKAGES,
        "EncryptedSession (the SDK's) over a TurnlogSession as its underlying session",
    ),
    Suite(
        "agents-runner",
        OPENAI_AGENTS,
        (
            "tests/test_agent_runner.py",
            "tests/test_agent_runner_streamed.py",
            "tests/test_max_turns.py",
            "tests/test_soft_cancel.py",
            "tests/test_tool_failure_boundaries.py",
            "tests/test_tool_batch_failure_history.py",
            "tests/test_native_tool_failure_history.py",
            "tests/test_run_impl_resume_paths.py",
            "tests/test_programmatic_tool_calling.py",
        ),
        ("SQLiteSession", "SimpleListSession"),
        _AGENT_PACKAGES,
        "Runner tests with a SQLiteSession or the in-memory SimpleListSession",
    ),
    Suite(
        "langchain-core",
        LANGCHAIN_CORE,
        (
            "tests/unit_tests/chat_history/test_chat_history.py",
            "tests/unit_tests/runnables/test_history.py",
        ),
        ("InMemoryChatMessageHistory",),
        ("langchain_core.chat_history",),
        "InMemoryChatMessageHistory and RunnableWithMessageHistory",
        eager_scopes=("in-memory",),
    ),
    Suite(
        "langchain-community",
        LANGCHAIN_COMMUNITY,
        (
            "tests/unit_tests/chat_message_histories/test_file_chat_message_history.py",
            "tests/unit_tests/chat_message_histories/test_sql.py",
        ),
        ("FileChatMessageHistory", "SQLChatMessageHistory"),
        ("langchain_community.chat_message_histories",),
        "FileChatMessageHistory and SQLChatMessageHistory",
    ),
)

SUITES_BY_NAME = {suite.name: suite for suite in SUITES}
