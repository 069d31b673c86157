"""The hot path of DDC, compiled from Cython: wire format, batching, sending and receiving.

Nothing here imports from the rest of the package; the Python shell above calls in.
"""
