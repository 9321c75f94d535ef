"""The query side: the status projection, its projector and the read API."""
