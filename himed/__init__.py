"""himed: RL post-training for vision-language models, built for radiology report generation (HiMed-RL)."""

__version__ = "0.1.0"
