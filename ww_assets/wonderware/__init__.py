"""The wonderware domain: tag catalog, history partitions, sync, checks."""
