"""Several instances, one tenant: the shared API budget, the elected tenant reader, signals."""
