import os
import sys

import pytest

# tests import helpers from each other (e.g. test_distributed uses test_search's settings)
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _isolate_default_scope():
    """A Runner built in one test sets mmengine's current default scope for the whole process;
    restore it so that every test sees the scope it set up itself."""
    from mmengine.registry import DefaultScope
    saved = DefaultScope._instance_dict.copy()
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(saved)
