"""Errors of the gateway."""


class GatewayError(Exception):
    """Base of gateway errors."""


class BrokerUnavailableError(GatewayError):
    """The broker cannot be reached or refused the connection."""
