"""The data plane: the replica wire protocol, the replica client wrapper and the router."""
