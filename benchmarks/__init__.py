"""Speed measurements of the book's code (``python -m benchmarks.speed``)."""
