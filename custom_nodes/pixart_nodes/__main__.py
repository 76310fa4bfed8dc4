"""``python -m pixart_nodes``: the same as the ``pixart`` command."""
import sys

from .cli import main

sys.exit(main())
