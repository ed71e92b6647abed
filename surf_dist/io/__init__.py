"""Files and settings, the ground floor: ``config`` (frozen dataclasses and named presets),
``checkpoint``, ``metrics_log``, ``plots``, ``progress`` (bars), ``files`` (output folders
checked and locked) and ``file_checks`` (the files a user gives, checked and read; results as
strict JSON; atomic, all-or-nothing writes; ``files`` re-exports them). It may import no other folder of the package; every folder
may import it."""
