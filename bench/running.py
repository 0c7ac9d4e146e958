"""How every bench script ends: its exit code, or 130 after a Ctrl-C that stopped everything."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn


def run(main: Callable[[], int]) -> NoReturn:
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; everything the bench started is stopped", file=sys.stderr)
        sys.exit(130)
