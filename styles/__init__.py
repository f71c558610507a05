"""Style library for Studio."""
