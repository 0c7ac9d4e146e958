"""``python -m producer.cli``: the same as the ``reqworker`` command."""

from producer.cli import main

main()
