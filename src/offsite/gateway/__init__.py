"""MQTT in and out: connect, subscribe, decode and validate, device status, commands."""
