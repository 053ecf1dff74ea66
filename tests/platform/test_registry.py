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
    from paralab.platform.paradigm import PARADIGMS

    assert group_options("model") == MODELS.names()
    assert group_options("data") == DATASETS.names()
    assert group_options("paradigm") == PARADIGMS.names()


def test_entry_point_modules_register_on_first_lookup_and_failures_are_reported(monkeypatch):
    """The platform finds paradigms through entry points, never by importing them."""
    import importlib.metadata as metadata

    points = [
        metadata.EntryPoint("fine", "paralab.platform.divergence", "paralab.widgets"),
        metadata.EntryPoint("broken", "paralab.no_such_module", "paralab.widgets"),
    ]
    asked = []

    def entry_points(group):
        asked.append(group)
        return points

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    registry: Registry = Registry("widget", entry_points="paralab.widgets")
    registry.register("a")(lambda: 1)
    assert asked == []  # registering does not load anything
    assert registry.names() == ["a"] and asked == ["paralab.widgets"]
    with pytest.raises(UnknownComponentError, match=r"broken.*ModuleNotFoundError"):
        registry.get("broken")
    assert asked == ["paralab.widgets"]  # loaded once


def test_the_layers_import_one_way():
    """cli/api -> benchmarks -> strategies -> platform: a lower layer never imports a higher one,
    not even inside a function."""
    import ast
    from pathlib import Path

    import paralab

    root = Path(paralab.__file__).parent
    higher = {
        "platform": ("paralab.strategies", "paralab.benchmarks", "paralab.cli", "paralab.api"),
        "strategies": ("paralab.benchmarks", "paralab.cli", "paralab.api"),
    }
    wrong = []
    for layer, forbidden in higher.items():
        for path in sorted((root / layer).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                bad = [n for n in names if n.startswith(forbidden)]
                wrong += [f"{path.relative_to(root)}: {n}" for n in bad]
    assert not wrong, wrong
