"""``python -m authlayer``: the same as the ``authlayer`` command."""

from .cli import main

raise SystemExit(main())
