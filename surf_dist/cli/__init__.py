"""The command line: the ``surf-dist`` parser and its subcommands (``main``), the checks run
before any work starts (``preflight``, with the memory estimate of ``memory_estimate``), and the
one-line errors and exit codes every command shares (``errors``). The top layer: it may import
every other folder, and nothing in the package imports it."""
