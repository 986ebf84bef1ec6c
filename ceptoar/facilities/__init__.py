"""Facilities: each facility's register (台帳) of systems and devices, and its matching against
advisories.
"""
