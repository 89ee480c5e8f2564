"""Reading, checking and indexing tumor imaging data."""
