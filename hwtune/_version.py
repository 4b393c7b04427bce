"""The package version, in one place (read by the package face, the CLI and run metadata)."""

__version__ = "0.2.0"
