"""The integration tier: real sweeps, pretraining, promote, predict, compare."""

from tests.conftest import mark_tier


def pytest_collection_modifyitems(items):
    mark_tier(items, __file__, "integration")
