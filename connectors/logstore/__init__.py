"""The exchange log: append-only, durable before forwarding, group-committed, tamper-evident."""
