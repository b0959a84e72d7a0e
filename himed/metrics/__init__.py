"""Corpus evaluation: R2Gen-comparable NLG metrics, clinical efficacy and report-level checks."""
