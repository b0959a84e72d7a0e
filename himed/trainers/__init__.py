"""GRPO (TRL) with scheduled hierarchical rewards, and the supervised stages (TRL SFT)."""
