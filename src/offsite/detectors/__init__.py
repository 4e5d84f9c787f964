"""Pure detectors: readings and configuration in, findings out. No I/O here."""
