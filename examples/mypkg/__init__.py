"""A researcher's own package, as sal sees it: a model builder and a data loader, no sal imports needed."""
