"""xafsflow.bayes."""
