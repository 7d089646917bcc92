"""Test suite package (lets the harness modules, e.g. ``tests.cluster``, be imported by tests)."""
