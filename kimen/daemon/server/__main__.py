"""`python -m kimen.daemon.server --socket PATH [--ready-fd N]`: run the session daemon."""

import sys

from .process import main

sys.exit(main())
