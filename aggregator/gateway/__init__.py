"""The gateway runtime: ingress pipeline, wire decoding, rounds, state, transports."""
