"""benchlab: a containerized TechEmpower-style benchmark lab for Python web stacks."""

__version__ = "0.1.0"
