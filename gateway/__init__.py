"""The gateway node: the inbound check pipeline, forwarding, token endpoint, outbound sender, portal, CLI."""
