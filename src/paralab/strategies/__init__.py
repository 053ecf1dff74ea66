"""The learning paradigms, one module (or small package) each.

Each registers itself with ``@register_paradigm`` (:mod:`paralab.platform.paradigm`); the
registry finds these modules through the ``paralab.paradigms`` entry points in
``pyproject.toml``, so the platform never imports this package.
"""
