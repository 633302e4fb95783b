"""Example job types of a dental imaging backend (``--app dental.jobs``)."""
