"""Every shipped suite composes: each run's experiment and overrides make a valid config (the
data are not loaded: the long suites read Fashion-MNIST), and ``@run`` references name an
earlier run."""

import pytest

from paralab.benchmarks.references import check_references, deferred
from paralab.benchmarks.suite_file import load_suite
from paralab.platform.config import group_options, load


@pytest.mark.parametrize("name", group_options("benchmark"))
def test_every_run_of_a_shipped_suite_composes(name):
    suite = load_suite(name)
    overrides = {run.name: [*suite.overrides, *run.overrides] for run in suite.runs}
    check_references(name, [r.name for r in suite.runs], overrides, ())
    for run in suite.runs:
        config = load(run.experiment, deferred(overrides[run.name]))
        assert config.name
