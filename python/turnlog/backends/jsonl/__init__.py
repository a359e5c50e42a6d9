"""The JSONL stores: ``<workspace>/sessions/<name>.jsonl``, one message a line, in ZeroClaw's
format (``docs/FORMAT.md``).

- ``base``: ``JsonlStoreBase``, what both stores share (checks, read errors, metadata).
- ``sidecar``: the metadata sidecars in ``<workspace>/.turnlog/meta/``.
- ``rust``: ``SessionStore`` over the native core; ``pure``: the pure-Python twin.

``turnlog.SessionStore`` is the Rust store when the native module is built, else the pure one.
"""
