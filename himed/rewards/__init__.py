"""Rewards (one module each), the registry, weight schedules and the composite of HiMed-RL."""
