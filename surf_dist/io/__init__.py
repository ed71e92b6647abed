"""Files and settings, the ground floor: ``config`` (frozen dataclasses and named presets),
``checkpoint``, ``metrics_log``, ``plots``, ``progress`` (bars) and ``files`` (output folders
checked and locked, atomic writes). It may import no other folder of the package; every folder
may import it."""
