"""The self-check side: imported as postwarden.checks."""
