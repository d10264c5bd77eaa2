"""mambaseq.pipelines."""
