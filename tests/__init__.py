"""Test suite package (lets ``tests.emulator`` be imported by tests and tools)."""
