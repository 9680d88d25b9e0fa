"""``python -m app``: the tray app (``omen app`` and ``omen-app`` run the same)."""

import sys

from app.main import main

sys.exit(main())
