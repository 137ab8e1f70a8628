"""Code both processes use: the event model, settings, Redis key names and the SQLite store.

Importing this package starts nothing and reads no environment.
"""
