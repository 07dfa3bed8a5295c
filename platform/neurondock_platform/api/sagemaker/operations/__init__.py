"""One module per resource; importing them fills the operation registry."""
