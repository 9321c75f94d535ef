"""The decision worker: the prequalification decision for each credit report."""
