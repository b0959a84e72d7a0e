"""Semantic judges: an OpenAI-compatible LLM judge and an offline labeler judge."""
