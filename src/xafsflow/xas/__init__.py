"""xafsflow.xas."""
