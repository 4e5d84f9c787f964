"""Errors of the gateway."""


class GatewayError(Exception):
    """Base of gateway errors."""


class BrokerUnavailableError(GatewayError):
    """The broker cannot be reached or refused the connection."""


class MqttProtocolError(GatewayError):
    """The broker sent bytes that are not a well-formed MQTT packet (the connection is then
    dropped and made again)."""
