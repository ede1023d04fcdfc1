"""Integrations with controller frameworks: ``integrations.kopf`` (the ``kopf`` extra).

Each module imports its framework itself; this package imports nothing optional.
"""
