"""Example shop service with deliberate, documented performance problems (see README.md)."""
