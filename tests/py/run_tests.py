"""Runs every tests/py/test_*.py with unittest; fails if a test fails or if no test ran at all.

scripts/test.sh calls it with the venv's python: target/test-venv/bin/python tests/py/run_tests.py
"""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))

if __name__ == "__main__":
    suite = unittest.defaultTestLoader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stderr).run(suite)
    if result.testsRun == 0:
        print("no Python test ran", file=sys.stderr)
        sys.exit(5)
    sys.exit(0 if result.wasSuccessful() else 1)
