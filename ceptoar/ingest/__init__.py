"""Ingest: normalized entries into the store as facts (decisions untouched), normalized in child
processes for large documents, medical signals.
"""
