"""The imperative shell: gRPC services around the core, listeners, event delivery."""
