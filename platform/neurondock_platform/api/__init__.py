"""Wire protocols only: parse a request, call a service, shape the answer."""
