"""The Parallel Decoupling Framework: deep prefixes, parallel paths, aggregation, MI estimation."""
