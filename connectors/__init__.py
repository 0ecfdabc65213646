"""Everything that talks to the outside: upstreams, the register source, log and state stores, sample apps."""
