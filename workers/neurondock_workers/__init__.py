"""neurondock workers."""
