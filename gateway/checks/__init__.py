"""The checks of the inbound pipeline, one small module per concern. The order lives in gateway.pipeline."""
