"""Identity and trust: certificates and OIN, tokens, the register and its signed snapshots, transparency."""
