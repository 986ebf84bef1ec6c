"""Incidents: clinics' reports, the obligations they owe (vendor, MHLW, prefecture, police, PPC) and
the notices and poster.
"""
