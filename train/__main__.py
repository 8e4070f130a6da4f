"""``python -m train``: see :mod:`train.run`."""

from .run import main

raise SystemExit(main())
