"""LSNet library code: datasets, transforms, temporal modules and the TSN wrapper."""
