"""Files and settings, below everything else: ``config`` (frozen dataclasses and named
presets), ``checkpoint``, ``metrics_log``, ``plots``, ``progress`` (bars) and ``files`` (output
folders checked and locked, atomic writes). Imports no other folder of the package."""
