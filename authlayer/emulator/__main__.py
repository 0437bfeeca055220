"""``python -m authlayer.emulator``: run the local Entra ID emulator in the foreground."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
