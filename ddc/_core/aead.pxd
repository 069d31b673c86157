from libc.stdint cimport uint8_t, uint64_t

cdef enum:
    KEY_BYTES = 32
    NONCE_BYTES = 12

cdef enum:
    NO_LIBRARY = -1
    LIBCRYPTO = 0
    LIBGCRYPT = 1


cdef class SessionCipher:
    cdef void* context
    cdef int library
    cdef bint encrypting
    cdef bint ready
    cdef readonly int key_id
    cdef readonly uint64_t session_id
    cdef uint8_t nonce[NONCE_BYTES]

    cdef inline bint holds(self, uint64_t session_id, int key_id) noexcept nogil:
        return self.ready and self.session_id == session_id and self.key_id == key_id

    cdef bint hmac_sha256(self, const uint8_t* key, const uint8_t* data, size_t length,
                          uint8_t* out) noexcept nogil
    cdef void use_nonce(self, uint64_t sequence) noexcept nogil
    cdef bint gcrypt_begin(self, const uint8_t* header, size_t header_length) noexcept nogil
    cdef bint libcrypto_pass(self, const uint8_t* header, size_t header_length, const uint8_t* data,
                             size_t length, uint8_t* out) noexcept nogil
    cdef bint rekey(self, const uint8_t* master_key, int key_id, uint64_t session_id) noexcept nogil
    cdef bint seal(self, const uint8_t* header, size_t header_length, const uint8_t* plain, size_t length,
                   uint64_t sequence, uint8_t* out) noexcept nogil
    cdef bint unseal(self, const uint8_t* header, size_t header_length, const uint8_t* sealed, size_t length,
                     uint64_t sequence, uint8_t* out) noexcept nogil
