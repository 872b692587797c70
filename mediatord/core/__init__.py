"""The functional core: SMCCC decoding, virtual PSCI, the domain model.

Nothing here imports grpc, touches a file or a socket, or reads the wall clock:
inputs go in, a new state and a list of effects come out.
"""
