"""Operations: the worker, setup, database operations, the source catalogue, the demo and its loopback
feed server.
"""
