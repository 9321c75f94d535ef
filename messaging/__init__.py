"""The consume side: the inbox consume loop, dead letters, and the consumers' metrics."""
