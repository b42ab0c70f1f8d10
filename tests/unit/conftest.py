"""The unit tier: no TensorFlow training, no server, no subprocess."""

from tests.conftest import mark_tier


def pytest_collection_modifyitems(items):
    mark_tier(items, __file__, "unit")
