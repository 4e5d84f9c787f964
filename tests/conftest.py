"""Fixtures live in tests/fixtures/, one module per real service."""

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.broker",
    "tests.fixtures.secure_broker",
    "tests.fixtures.video",
]
