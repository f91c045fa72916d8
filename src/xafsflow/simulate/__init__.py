"""xafsflow.simulate."""
