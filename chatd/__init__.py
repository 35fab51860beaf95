"""chatd: real-time chat and presence server for an owner community."""

__version__ = "0.1.0"
