import pytest

from paralab.errors import UnknownComponentError
from paralab.platform.registry import Registry, import_modules


def test_unknown_name_lists_the_choices():
    registry: Registry = Registry("widget")
    registry.register("b")(lambda: 2)
    registry.register("a")(lambda: 1)
    assert registry.names() == ["a", "b"]
    with pytest.raises(UnknownComponentError, match=r"unknown widget 'c'.*a, b"):
        registry.get("c")


def test_registering_a_name_twice_is_an_error():
    registry: Registry = Registry("widget")
    registry.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="twice"):
        registry.register("a")(lambda: 2)


def test_a_module_that_fails_to_import_is_reported_when_asked_for():
    registry: Registry = Registry("widget")
    import_modules(registry, "paralab", ["no_such_module"])
    with pytest.raises(UnknownComponentError, match=r"no_such_module.*ModuleNotFoundError"):
        registry.get("no_such_module")


def test_config_groups_match_the_registries():
    """Every registered component can be named in a config, and every config names one."""
    from paralab.platform.config import group_options
    from paralab.platform.data import DATASETS
    from paralab.platform.models import MODELS
    from paralab.strategies import PARADIGMS

    assert group_options("model") == MODELS.names()
    assert group_options("data") == DATASETS.names()
    assert group_options("paradigm") == PARADIGMS.names()
