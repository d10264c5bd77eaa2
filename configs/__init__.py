"""mambaseq.configs."""
