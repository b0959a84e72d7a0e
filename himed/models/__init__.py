"""Loading policies and processors; tiny offline models for tests and the quickstart."""
