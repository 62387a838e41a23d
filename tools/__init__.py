"""Command-line interface and deployment tooling for ascend-v4."""
