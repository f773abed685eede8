"""Where results go: the dispatch topic (through the Redis ledger), dead letters, metrics."""
