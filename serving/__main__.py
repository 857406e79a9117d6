"""``python -m serving``: see :mod:`serving.cli`."""

from __future__ import annotations

import sys

from serving.cli import main

sys.exit(main())
