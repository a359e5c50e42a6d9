"""``tests/peers`` holds the harness that runs the frameworks' own test suites against turnlog's
adapters (``python tests/peers/run.py``), not tests of this project: keep it out of the project's
pytest collection."""

collect_ignore_glob = ["*"]
