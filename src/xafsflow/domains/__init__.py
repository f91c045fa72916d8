"""xafsflow.domains."""
