"""The bottom room: errors, the shared vocabulary (model, extensions), settings and configuration
files, facility facts, files, output, paths, templates and mail. Imports nothing above it.
"""
