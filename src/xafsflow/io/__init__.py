"""xafsflow.io."""
