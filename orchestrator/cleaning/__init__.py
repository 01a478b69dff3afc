"""Cleaning steps of the dataset export: secret redaction, near-duplicate removal and token counts.

Each module imports its library (detect-secrets, datasketch, tokenizers) only when its step runs, so an
export that turns a step off does not pay for it.
"""
