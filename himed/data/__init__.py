"""Study rows, loaders, report sections, text cleaning, prompts and the procedural demo data."""
