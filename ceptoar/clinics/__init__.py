"""Clinics: digests and alerts by mail, facilities' answers, exposure counts.
"""
