"""``python -m turnlog.cli``: the ``turnlog`` command, as ``python -m turnlog`` runs it."""

from __future__ import annotations

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
