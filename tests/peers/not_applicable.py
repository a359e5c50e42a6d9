"""The frameworks' tests that build the reference class but cannot apply to turnlog's adapter,
each with its reason: test id (``path::name``, or ``path::name[params]`` for one case) -> reason
(or ``{backend: reason}`` when it does not apply on some backends only).

A test belongs here only when what it checks is a property of the reference class's own machinery
(its private SQLite/aiosqlite/SQLAlchemy/Redis objects, its database file or schema, a
constructor argument or attribute only it has, its name in a message), never because turnlog
behaves differently: a test that fails on a real behaviour difference stays in the run, and is a
finding. ``run.py --show-na`` lists them with their reasons; ``run.py`` flags entries that match
no test (left over from an older release of the framework).
"""

from __future__ import annotations

# --- reasons -------------------------------------------------------------------------------------

PRIVATE_CONNECTION = (
    "works on the reference class's private database connection(s) (_connections, "
    "_connections_lock, _get_connection, _locked_connection, _connection): its SQLite machinery"
)
CORRUPT_ROW = (
    "writes a corrupt row with SQL through the reference class's private connection and table; "
    "the adapter has no SQL table to damage (turnlog's damaged lines/rows: its own tests)"
)
TIE_TIMESTAMPS = (
    "rewrites created_at of the reference class's rows with SQL to tie them (it orders by time, "
    "then row id); the adapter stores no per-item time: its order is the append order"
)
RAW_SQLITE_FILE = (
    "opens the reference class's database file with sqlite3 (drops its tables, probes its write "
    "lock): there is no such file behind the adapter"
)
SUBCLASS_INTERNALS = (
    "subclasses the reference class to override its private connection setup "
    "(_init_db_for_connection)"
)
AIOSQLITE_INTERNALS = (
    "patches aiosqlite/sqlite3 calls that only the reference class makes (WAL setup, connect, "
    "commit, rollback) to steer its connection handling"
)
SQLALCHEMY_INTERNALS = (
    "replaces or inspects the reference class's private SQLAlchemy machinery (_session_factory, "
    "_ensure_tables, _init_lock, _table_init_locks, _sqlite_configured_engines, fake "
    "results/transactions/row counts of its DELETE ... RETURNING claim)"
)
ENGINE = (
    "checks the SQLAlchemy engine the reference class exposes (session.engine), or uses it to "
    "lock the reference class's database; the adapter has no engine"
)
SQL_STATEMENTS = (
    "asserts on the SQL statements the reference class emits (engine events); its behavioural "
    "checks before that (one pop gets the one item) are those of other tests"
)
STORED_JSON_ENCODING = (
    "reads the reference class's raw rows to check how it escapes non-ASCII text "
    "(ensure_ascii, an argument only it has)"
)
REDIS_CLIENT = (
    "injects faults into, or observes, the redis-py client, connection pool or pipeline handed "
    "to the reference class (or its private _redis); the adapter never uses that client (its "
    "store has its own), so the test would pass vacuously or wait forever"
)
REDIS_KEYS = (
    "reads, writes or collides with the reference class's own Redis keys (_session_key, "
    "_messages_key, _counter_key) or calls its private helpers (_get_next_id, "
    "_atomic_replace_items)"
)
REDIS_TTL = (
    "uses ttl=, an argument only RedisSession has (TurnlogSession has no expiry argument; "
    "turnlog's RedisSessionBackend has expire_after)"
)
REDIS_PING = "calls ping(), a method only RedisSession has"
REDIS_CLIENT_OWNERSHIP = (
    "checks whether the reference class closes the redis-py client it was given or made "
    "(_owns_client, ping() on that client after close()); the adapter never uses that client"
)
REDIS_CLIENT_OPTIONS = (
    "checks that the reference class copes with an option of the redis-py client it is handed "
    "(decode_responses=True); the adapter never uses that client"
)
REDIS_CLUSTER_CLIENT = (
    "hands the reference class a RedisCluster client, which it refuses for transactions "
    "(TypeError) or reads through a subclass; the adapter never uses that client"
)
REDIS_CORRUPT_ENTRY = (
    "pushes a corrupt entry into the reference class's Redis list (_messages_key) through the "
    "client it was handed; the adapter's store never uses that client"
)
SUBCLASS_REDIS = "subclasses the reference class to override its storage methods"
PROCESS_FILE_LOCKS = (
    "checks the reference class's process-wide registry of per-file locks (_lock, _file_locks, "
    "_file_lock_counts)"
)


def _closed_message(name: str) -> str:
    return (
        f"matches the closed-session RuntimeError against the reference class's own name "
        f"('{name} is closed', a literal in the SDK); the adapter raises the same RuntimeError "
        f"with its own ('TurnlogSession is closed')"
    )


_SESSION = "tests/memory/test_session.py::"
_ASYNC_SQLITE = "tests/extensions/memory/test_async_sqlite_session.py::"
_SQLALCHEMY = "tests/extensions/memory/test_sqlalchemy_session.py::"
_REDIS = "tests/extensions/memory/test_redis_session.py::"
_ENCRYPT = "tests/extensions/memory/test_encrypt_session.py::"

NOT_APPLICABLE: dict[str, str | dict[str, str]] = {
    # --- openai-agents: SQLiteSession ------------------------------------------------------------
    _SESSION + "test_sqlite_session_close_closes_worker_thread_connections": PRIVATE_CONNECTION,
    _SESSION + "test_sqlite_session_reaps_connections_from_exited_worker_threads": (
        PRIVATE_CONNECTION
    ),
    _SESSION + "test_sqlite_session_closes_retired_connections_before_the_next_allocation": (
        PRIVATE_CONNECTION
    ),
    _SESSION + "test_sqlite_session_keeps_connections_of_live_worker_threads": PRIVATE_CONNECTION,
    _SESSION + "test_sqlite_session_close_retries_quarantined_connection": PRIVATE_CONNECTION,
    _SESSION + "test_sqlite_session_rollback_failure_evicts_connection": PRIVATE_CONNECTION,
    _SESSION + "test_sqlite_session_post_commit_cancellation_propagates_after_known_outcome": (
        PRIVATE_CONNECTION + " (it pauses a commit of the connection it injects)"
    ),
    _SESSION + "test_sqlite_session_closed_rejects_empty_add_items": _closed_message(
        "SQLiteSession"
    ),
    _SESSION + "test_sqlite_session_pop_item_skips_corrupt_most_recent": CORRUPT_ROW,
    _SESSION + "test_sqlite_session_pop_item_returns_none_after_dropping_only_corrupt_rows": (
        CORRUPT_ROW
    ),
    _SESSION + "test_sqlite_session_get_items_limit_skips_corrupt_newest_rows": CORRUPT_ROW,
    _SESSION + "test_sqlite_session_get_items_session_settings_limit_skips_corrupt_rows": (
        CORRUPT_ROW
    ),
    _SESSION + "test_sqlite_session_file_lock_is_shared_across_instances": PROCESS_FILE_LOCKS,
    _SESSION + "test_sqlite_session_failed_add_items_releases_write_lock": RAW_SQLITE_FILE,
    _SESSION + "test_sqlite_session_failed_clear_session_rolls_back": RAW_SQLITE_FILE,
    _SESSION + "test_sqlite_session_failed_pop_item_releases_write_lock": RAW_SQLITE_FILE,
    # --- openai-agents: AsyncSQLiteSession -------------------------------------------------------
    _ASYNC_SQLITE + "test_async_sqlite_session_pop_item_skips_corrupt_most_recent": CORRUPT_ROW,
    _ASYNC_SQLITE
    + "test_async_sqlite_session_pop_item_returns_none_after_dropping_only_corrupt_rows": (
        CORRUPT_ROW
    ),
    _ASYNC_SQLITE + "test_async_sqlite_session_get_items_limit_skips_corrupt_newest_rows": (
        CORRUPT_ROW
    ),
    _ASYNC_SQLITE + "test_async_sqlite_session_get_items_same_timestamp_consistent_order": (
        TIE_TIMESTAMPS
    ),
    _ASYNC_SQLITE + "test_async_sqlite_session_pop_item_same_timestamp_returns_latest": (
        TIE_TIMESTAMPS
    ),
    _ASYNC_SQLITE + "test_async_sqlite_session_closed_operations_raise_runtime_error": (
        _closed_message("AsyncSQLiteSession")
    ),
    _ASYNC_SQLITE + "test_async_sqlite_session_closed_rejects_empty_add_items": _closed_message(
        "AsyncSQLiteSession"
    ),
    _ASYNC_SQLITE + "test_async_sqlite_session_close_before_use_is_terminal": _closed_message(
        "AsyncSQLiteSession"
    ),
    _ASYNC_SQLITE + "test_async_sqlite_session_close_is_idempotent": _closed_message(
        "AsyncSQLiteSession"
    ),
    _ASYNC_SQLITE + "test_cancelled_close_finishes_cleanup_and_propagates_cancellation": (
        PRIVATE_CONNECTION + " (it pauses the close of the aiosqlite connection)"
    ),
    _ASYNC_SQLITE + "test_post_commit_cancellation_propagates_after_known_mutation_outcome": (
        PRIVATE_CONNECTION + " (it pauses the commit of the aiosqlite connection)"
    ),
    _ASYNC_SQLITE + "test_failed_add_items_rolls_back_and_reuses_connection": (
        PRIVATE_CONNECTION + "; and " + RAW_SQLITE_FILE
    ),
    _ASYNC_SQLITE + "test_failed_clear_session_rolls_back": RAW_SQLITE_FILE,
    _ASYNC_SQLITE + "test_failed_pop_item_releases_write_lock": RAW_SQLITE_FILE,
    _ASYNC_SQLITE + "test_failed_initialization_closes_candidate_connection": SUBCLASS_INTERNALS,
    _ASYNC_SQLITE + "test_initialization_retries_transient_wal_lock": AIOSQLITE_INTERNALS,
    _ASYNC_SQLITE + "test_initialization_releases_wal_cursor_before_schema_write": (
        SUBCLASS_INTERNALS
    ),
    _ASYNC_SQLITE + "test_initialization_does_not_retry_unrecoverable_wal_errors": (
        AIOSQLITE_INTERNALS
    ),
    _ASYNC_SQLITE + "test_cancelled_wal_retry_closes_startup_connection": AIOSQLITE_INTERNALS,
    _ASYNC_SQLITE + "test_cancelled_add_items_rolls_back_write_transaction": (
        PRIVATE_CONNECTION + " (it pauses its execute and rollback)"
    ),
    _ASYNC_SQLITE + "test_operation_failure_then_cancellation_during_rollback": (
        PRIVATE_CONNECTION + " (it fails its execute and pauses its rollback)"
    ),
    _ASYNC_SQLITE + "test_rollback_failure_closes_and_evicts_connection": PRIVATE_CONNECTION,
    _ASYNC_SQLITE + "test_close_retries_connection_quarantined_after_rollback_failure": (
        PRIVATE_CONNECTION
    ),
    _ASYNC_SQLITE + "test_close_retries_quarantined_failed_initialization_candidate": (
        SUBCLASS_INTERNALS
    ),
    _ASYNC_SQLITE + "test_cancelled_initialization_finishes_candidate_close": SUBCLASS_INTERNALS,
    _ASYNC_SQLITE + "test_initialization_failure_then_cancellation_during_candidate_close": (
        SUBCLASS_INTERNALS
    ),
    _ASYNC_SQLITE + "test_cancelled_connect_closes_eventually_acquired_connection": (
        AIOSQLITE_INTERNALS
    ),
    # --- openai-agents: SQLAlchemySession --------------------------------------------------------
    _SQLALCHEMY + "test_add_items_cancelled_waiter_does_not_strand_table_init_lock": (
        SQLALCHEMY_INTERNALS
    ),
    _SQLALCHEMY + "test_create_tables_false_does_not_allocate_shared_init_lock": (
        SQLALCHEMY_INTERNALS
    ),
    _SQLALCHEMY + "test_sqlite_configuration_registry_releases_collected_engines": (
        SQLALCHEMY_INTERNALS
    ),
    _SQLALCHEMY + "test_sqlite_configuration_registry_does_not_grow_unbounded": (
        SQLALCHEMY_INTERNALS
    ),
    _SQLALCHEMY + "test_mutation_cancellation_waits_for_transaction_exit": SQLALCHEMY_INTERNALS,
    _SQLALCHEMY + "test_pop_item_supports_unknown_delete_rowcount": SQLALCHEMY_INTERNALS,
    _SQLALCHEMY + "test_pop_item_retries_returning_claim_lost_to_concurrent_delete": (
        SQLALCHEMY_INTERNALS
    ),
    _SQLALCHEMY + "test_engine_property_from_url": ENGINE,
    _SQLALCHEMY + "test_engine_property_from_external_engine": ENGINE,
    _SQLALCHEMY + "test_engine_property_is_read_only": ENGINE,
    _SQLALCHEMY + "test_add_items_waits_for_transient_sqlite_write_lock": ENGINE,
    _SQLALCHEMY + "test_sqlite_fallback_reserves_writer_before_tail_claim": SQL_STATEMENTS,
    _SQLALCHEMY + "test_pop_item_skips_corrupt_most_recent": CORRUPT_ROW,
    _SQLALCHEMY + "test_pop_item_returns_none_after_dropping_only_corrupt_rows": CORRUPT_ROW,
    _SQLALCHEMY + "test_get_items_limit_skips_corrupt_newest_rows": CORRUPT_ROW,
    _SQLALCHEMY + "test_get_items_same_timestamp_consistent_order": TIE_TIMESTAMPS,
    _SQLALCHEMY + "test_pop_item_same_timestamp_returns_latest": TIE_TIMESTAMPS,
    _SQLALCHEMY + "test_get_items_orders_by_id_for_ties": TIE_TIMESTAMPS,
    _SQLALCHEMY + "test_sqlalchemy_session_defaults_to_escaped_non_ascii_storage": (
        STORED_JSON_ENCODING
    ),
    _SQLALCHEMY + "test_sqlalchemy_session_can_store_non_ascii_without_escaping": (
        STORED_JSON_ENCODING
    ),
    # --- openai-agents: RedisSession -------------------------------------------------------------
    _REDIS
    + "test_redis_session_rejects_cluster_transactions_before_pipeline": REDIS_CLUSTER_CLIENT,
    _REDIS + "test_redis_cluster_reads_and_subclass_writes": REDIS_CLUSTER_CLIENT,
    _REDIS + "test_colliding_session_clear_preserves_existing_session": REDIS_KEYS,
    _REDIS + "test_get_next_id_method": REDIS_KEYS,
    _REDIS + "test_add_items_preserves_created_at_metadata": REDIS_KEYS,
    _REDIS + "test_add_items_rejects_wrong_metadata_key_type_before_writing": REDIS_KEYS,
    _REDIS + "test_atomic_replacement_serializes_before_deleting_history": REDIS_KEYS,
    _REDIS + "test_atomic_replacement_rejects_colliding_counter_key": REDIS_KEYS,
    _REDIS + "test_colliding_counter_rejects_ttl_write_before_side_effects": REDIS_TTL,
    _REDIS + "test_released_redis_layout_remains_usable": REDIS_TTL,
    _REDIS + "test_ttl_functionality": REDIS_TTL,
    _REDIS + "test_add_items_applies_ttl_in_the_write_transaction": REDIS_TTL,
    _REDIS + "test_add_items_rejects_unrepresentable_ttl_before_writing": REDIS_TTL,
    _REDIS + "test_add_items_uses_server_absolute_expiration_after_serialization": REDIS_TTL,
    _REDIS + "test_add_items_refreshes_server_timestamps_after_watch_retry": REDIS_TTL,
    _REDIS + "test_add_items_with_ttl_supports_single_connection_pool": REDIS_TTL,
    _REDIS + "test_atomic_replacement_preserves_clear_add_metadata": REDIS_TTL,
    _REDIS + "test_clear_rechecks_key_types_after_concurrent_replacement": REDIS_CLIENT,
    _REDIS + "test_mutation_cancellation_waits_for_authoritative_outcome": REDIS_CLIENT,
    _REDIS + "test_ambiguous_exec_watch_error_is_not_retried": REDIS_CLIENT,
    _REDIS + "test_redis81_standard_pool_checkout_records_native_observability": REDIS_CLIENT,
    _REDIS + "test_redis8_blocking_pool_checkout_preserves_native_timing": REDIS_CLIENT,
    _REDIS + "test_cancelled_watch_releases_single_connection_pool": REDIS_CLIENT,
    _REDIS + "test_cancelled_in_flight_watch_command_reconnects_before_pool_reuse": REDIS_CLIENT,
    _REDIS + "test_cancelled_connection_acquisition_is_discarded_before_release": REDIS_CLIENT,
    _REDIS + "test_post_commit_cancellation_propagates_after_cleanup": REDIS_CLIENT,
    _REDIS + "test_post_commit_response_callback_failure_does_not_retry": REDIS_CLIENT,
    _REDIS + "test_successful_batch_response_with_sibling_error_does_not_retry": REDIS_CLIENT,
    _REDIS + "test_post_commit_reset_self_cancellation_does_not_cancel_caller": REDIS_CLIENT,
    _REDIS + "test_post_commit_reset_failure_detaches_without_release_listener": REDIS_CLIENT,
    _REDIS + "test_reconnect_required_release_detaches_without_listener_reborrow": REDIS_CLIENT,
    _REDIS + "test_reconnect_marked_inside_release_failure_is_detached": REDIS_CLIENT,
    _REDIS + "test_post_commit_release_listener_failure_does_not_retry": REDIS_CLIENT,
    _REDIS + "test_pre_exec_close_failure_is_quarantined": REDIS_CLIENT,
    _REDIS + "test_pre_exec_cancellation_skips_pipeline_reset": REDIS_CLIENT,
    _REDIS + "test_blocking_pool_cancellation_completion_owns_release": REDIS_CLIENT,
    _REDIS + "test_ordinary_pool_cancellation_completion_owns_release": REDIS_CLIENT,
    _REDIS + "test_transparent_overridden_pool_release_is_supported": REDIS_CLIENT,
    _REDIS + "test_release_failure_after_reborrow_preserves_new_borrower": REDIS_CLIENT,
    _REDIS + "test_post_commit_disconnect_failure_is_not_retryable": REDIS_CLIENT,
    _REDIS + "test_post_commit_detached_close_failure_is_quarantined": REDIS_CLIENT,
    _REDIS + "test_blocking_pool_listener_failure_notifies_waiter": REDIS_CLIENT,
    _REDIS + "test_blocking_pool_detached_disconnect_notifies_waiter": REDIS_CLIENT,
    _REDIS + "test_post_commit_internal_reset_failure_does_not_report_write_failure": REDIS_CLIENT,
    _REDIS + "test_redis_session_failed_cleanup_is_terminal_and_retried": REDIS_CLIENT,
    _REDIS + "test_redis_session_cancelled_cleanup_is_terminal_and_retried": REDIS_CLIENT,
    _REDIS + "test_compaction_replaces_redis_history_atomically": REDIS_CLIENT,
    _REDIS + "test_compaction_cancel_after_redis_commit_invalidates_cached_history": REDIS_CLIENT,
    _REDIS + "test_cancelled_redis_compaction_handoff_remains_resumable": REDIS_CLIENT,
    _REDIS + "test_redis_connectivity": REDIS_PING,
    _REDIS + "test_ping_connection_failure": REDIS_PING,
    _REDIS + "test_redis_session_ping_raises_after_close": REDIS_PING,
    _REDIS + "test_from_url_constructor": REDIS_PING,
    _REDIS + "test_session_settings_from_url": REDIS_PING,
    _REDIS + "test_external_client_not_closed": REDIS_CLIENT_OWNERSHIP,
    _REDIS + "test_internal_client_ownership": REDIS_CLIENT_OWNERSHIP,
    _REDIS + "test_close_method_coverage": REDIS_CLIENT_OWNERSHIP,
    _REDIS + "test_redis_session_close_is_noop_for_injected_client": REDIS_CLIENT_OWNERSHIP,
    _REDIS + "test_redis_session_closed_operations_raise_runtime_error": REDIS_CLIENT_OWNERSHIP,
    _REDIS + "test_redis_session_operation_waiting_behind_close_raises": REDIS_CLIENT_OWNERSHIP,
    _REDIS + "test_decode_responses_client_compatibility": REDIS_CLIENT_OPTIONS,
    _REDIS + "test_real_redis_decode_responses_compatibility": REDIS_CLIENT_OPTIONS,
    _REDIS + "test_get_items_limit_skips_corrupt_newest_messages": REDIS_CORRUPT_ENTRY,
    _REDIS + "test_corrupted_data_handling": REDIS_CORRUPT_ENTRY,
    _REDIS + "test_compaction_subclass_retains_overridden_storage_methods": SUBCLASS_REDIS,
    _REDIS + "test_redis_session_closed_rejects_empty_add_items": _closed_message("RedisSession"),
    _REDIS + "test_redis_session_close_is_idempotent": _closed_message("RedisSession"),
    # --- openai-agents: EncryptedSession over SQLiteSession ---------------------------------------
    _ENCRYPT
    + "test_encrypted_pop_authentication_is_atomic_with_concurrent_mutations": RAW_SQLITE_FILE,
    _ENCRYPT + "test_encrypted_pop_wrong_key_preserves_row_identity": RAW_SQLITE_FILE,
    # --- openai-agents: Runner tests ------------------------------------------------------------
    "tests/test_run_impl_resume_paths.py::test_handoff_resume_after_cancelled_compaction_commits": (
        "patches the reference class's private _insert_items (to fail a write after its commit)"
    ),
    # --- langchain-community: SQLChatMessageHistory ---------------------------------------------
    "tests/unit_tests/chat_message_histories/test_sql.py::test_model_no_session_id_field_error": (
        "checks that the reference class refuses a custom_message_converter whose SQL model has no "
        "session_id column: an argument (and a SQL model) only it has"
    ),
}

# --- known differences: real, run, expected to fail (strict: a pass is reported) -----------------
# EncryptedSession special-cases the SDK's own SQLiteSession (openai-agents 0.24.0,
# extensions/memory/encrypt_session.py): only there does it authenticate an item before deleting
# it, and only there does compaction use the session's private _get_compaction_snapshot. Over
# any other session (TurnlogSession, the SDK's own RedisSession or AsyncSQLiteSession alike) it
# pops first and compacts the whole history. docs/INTEGRATIONS.md says so.
_ENCRYPTED_POP_FIRST = (
    "EncryptedSession authenticates an item before deleting it only when the underlying session "
    "is the SDK's SQLiteSession; over TurnlogSession it pops first, so a wrong key loses the item"
)
KNOWN_DIFFERENCES = {
    _ENCRYPT + "test_encrypted_pop_wrong_key_preserves_recoverable_history": _ENCRYPTED_POP_FIRST,
    _ENCRYPT
    + "test_encrypted_pop_rechecks_authentication_after_expired_tail": _ENCRYPTED_POP_FIRST,
    _ENCRYPT
    + "test_encrypted_pop_cancellation_waits_for_authentication_rollback": _ENCRYPTED_POP_FIRST,
    _ENCRYPT + "test_encrypted_compaction_skips_unencrypted_stored_history": (
        "EncryptedSession compacts only the encrypted suffix through the private "
        "_get_compaction_snapshot hook of the SDK's own sessions; TurnlogSession does not "
        "implement private SDK hooks, so compaction reads and replaces the whole history"
    ),
}
