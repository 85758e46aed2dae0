import os
import sys

# tests import helpers from each other (e.g. test_distributed uses test_search's settings)
sys.path.insert(0, os.path.dirname(__file__))
