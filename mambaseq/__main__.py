"""``python -m mambaseq`` == the ``mambaseq`` console script."""

from mambaseq.cli import main

raise SystemExit(main())
