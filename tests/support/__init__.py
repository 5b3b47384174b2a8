"""Test support: fake upstream servers and the gateway subprocess runner.

Import as ``from support.fake_upstream import ...`` / ``from support.gateway import ...``
(tests/conftest.py puts the tests directory on sys.path)."""
