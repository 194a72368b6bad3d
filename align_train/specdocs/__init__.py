"""Synthetic documents about a model spec, for model-spec midtraining (``align-data spec-docs``).

spec (the file format and its checks) -> generate (template / model / openai generators)
-> dedupe (exact and near duplicates, length filters) -> jsonl with provenance and a data card.
"""
