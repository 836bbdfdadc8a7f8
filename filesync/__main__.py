from __future__ import annotations

from filesync.cli import main

raise SystemExit(main())
