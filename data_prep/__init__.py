"""mambaseq.data_prep."""
