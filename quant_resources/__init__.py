"""I/O at the edges: Dagster ``ConfigurableResource``s and clients for the outside world."""
