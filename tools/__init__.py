"""Command-line tools: data preparation, synthetic data, benchmarks, demo, export."""
