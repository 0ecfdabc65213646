"""Sample participants for the demo federation and the tests: a dashboard that offers the Progress API, and a
publisher that pushes progress through the gateway."""
