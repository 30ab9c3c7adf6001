"""The milter side: imported as postwarden.milter (never as a top-level `milter`)."""
