"""The credit worker: a simulated CIBIL score for each submitted application."""
