"""``python -m invox_batch`` is the same as the ``invox-batch`` command."""

from .cli import main

main()
