"""Sharing: the TAXII 2.1 server, the hub's web pages, exports, members and their grants.
"""
