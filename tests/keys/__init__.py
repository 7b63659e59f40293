"""Shared helpers for the key-management, write-only and signature tests (tests/integration/test_keys*.py, ...)."""
