"""The engine every paradigm shares: registries, config, data, models, tasks, tracking, runner.

Import its modules (``import paralab.platform.config``), never ``from paralab import platform``
at top level of a script, which would read like the standard library's ``platform``.
"""
