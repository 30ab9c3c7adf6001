"""postwarden: keep a self-hosted Postfix server off blocklists."""

__version__ = "0.1.0"
