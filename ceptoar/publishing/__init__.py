"""Publishing: analyst decisions (triage), publication snapshots, collections and their filters,
clinic-facing text.
"""
