"""One router module per area of the API; each imports only `broker.api.deps` and the domain."""
