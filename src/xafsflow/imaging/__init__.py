"""xafsflow.imaging."""
