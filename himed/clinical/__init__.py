"""Clinical labelers (rule-based, CheXbert), the RadGraph bridge and severity terms."""
