"""The link transport: sockets and the threads that drive the Cython sender and receiver."""
