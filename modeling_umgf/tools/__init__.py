"""Tools around the model that are not Hub remote code: loading, CLI, converter, caches, metrics, run folders."""
