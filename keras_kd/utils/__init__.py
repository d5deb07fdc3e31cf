"""Internal helpers: argument checks and error text."""
