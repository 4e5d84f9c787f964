"""Errors of the storage layer."""


class IngestError(Exception):
    """Base of storage errors."""


class MigrationError(IngestError):
    """The schema could not be brought up to date."""
