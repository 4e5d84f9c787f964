"""offsite: IoT and off-site remote supervision gateway."""

__version__ = "0.1.0"
