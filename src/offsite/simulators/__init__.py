"""Simulated devices that publish like real ones: their own connection, last will, QoS 1."""
