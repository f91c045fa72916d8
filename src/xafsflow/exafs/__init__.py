"""xafsflow.exafs."""
