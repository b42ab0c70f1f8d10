"""The system tier: distributed sweeps, Ray, PostgreSQL, the browser, signals."""

from tests.conftest import mark_tier


def pytest_collection_modifyitems(items):
    mark_tier(items, __file__, "system")
