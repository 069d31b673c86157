"""AES-256-GCM per datagram through OpenSSL's libcrypto, without the GIL.

Nothing cryptographic is written here, only calls into libcrypto's EVP interface.
Why not the `cryptography` package (which DDC uses for everything else about
keys): its OpenSSL is linked statically behind a Python API, so using it per
datagram would put a Python call on the hot path. libcrypto is opened with
dlopen at run time instead of being linked, so building DDC needs no OpenSSL
headers and a proxy without a key never touches it; every Linux that runs
Python's ssl module has it.

A link's master key never encrypts anything itself. Each sender session uses
its own key, HKDF-Expand-SHA256(master key, "ddc v2 session key" || session id,
32 bytes), and each datagram the nonce 00000000 || sequence (big-endian). A
session never reuses a sequence, and two sessions share a key only if they share
a session id (docs/security.md). The 56-byte header, with its checksum field
zero, is the additional authenticated data; the 16-byte tag follows the payload.
"""

from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy, memset

from ddc._core.byteorder cimport put64


cdef extern from "<dlfcn.h>" nogil:
    void* dlopen(const char* filename, int flags)
    void* dlsym(void* handle, const char* symbol)
    char* dlerror()
    int RTLD_NOW
    int RTLD_LOCAL

ctypedef void* (*NewContext)() noexcept nogil
ctypedef void (*FreeContext)(void* context) noexcept nogil
ctypedef const void* (*Algorithm)() noexcept nogil
ctypedef int (*CipherInit)(void* context, const void* cipher, void* engine, const uint8_t* key,
                           const uint8_t* nonce) noexcept nogil
ctypedef int (*CipherUpdate)(void* context, uint8_t* out, int* out_length, const uint8_t* data,
                             int length) noexcept nogil
ctypedef int (*CipherFinal)(void* context, uint8_t* out, int* out_length) noexcept nogil
ctypedef int (*CipherControl)(void* context, int kind, int argument, void* pointer) noexcept nogil
ctypedef uint8_t* (*Hmac)(const void* digest, const void* key, int key_length, const uint8_t* data,
                          size_t length, uint8_t* out, unsigned int* out_length) noexcept nogil

cdef enum:
    CONTROL_GCM_GET_TAG = 0x10
    CONTROL_GCM_SET_TAG = 0x11
    INFO_LABEL_BYTES = 18
    INFO_BYTES = INFO_LABEL_BYTES + 8 + 1

cdef struct Api:
    NewContext new_context
    FreeContext free_context
    Algorithm aes_256_gcm
    Algorithm sha256
    CipherInit encrypt_init
    CipherUpdate encrypt_update
    CipherFinal encrypt_final
    CipherInit decrypt_init
    CipherUpdate decrypt_update
    CipherFinal decrypt_final
    CipherControl control
    Hmac hmac

cdef const char* SESSION_KEY_INFO = b"ddc v2 session key"
cdef Api api
cdef bint api_loaded = False
loaded_from = None

SYMBOLS = ("EVP_CIPHER_CTX_new", "EVP_CIPHER_CTX_free", "EVP_aes_256_gcm", "EVP_sha256",
           "EVP_EncryptInit_ex", "EVP_EncryptUpdate", "EVP_EncryptFinal_ex",
           "EVP_DecryptInit_ex", "EVP_DecryptUpdate", "EVP_DecryptFinal_ex", "EVP_CIPHER_CTX_ctrl", "HMAC")
KEY_LENGTH = KEY_BYTES


def load_libcrypto(str path):
    """Opens libcrypto at path (a file name the dynamic linker resolves, or a full path).

    Raises OSError naming what is missing; loading twice is harmless."""
    global api_loaded, loaded_from
    cdef void* handle
    cdef void* found[12]
    cdef int i
    if api_loaded:
        return loaded_from
    handle = dlopen(path.encode(), RTLD_NOW | RTLD_LOCAL)
    if handle == NULL:
        raise OSError(f"cannot open {path}: {(<bytes>dlerror()).decode(errors='replace')}")
    for i, name in enumerate(SYMBOLS):
        found[i] = dlsym(handle, (<str>name).encode())
        if found[i] == NULL:
            raise OSError(f"{path} has no {name}; it is not an OpenSSL 1.1 or 3.x libcrypto")
    api.new_context = <NewContext>found[0]
    api.free_context = <FreeContext>found[1]
    api.aes_256_gcm = <Algorithm>found[2]
    api.sha256 = <Algorithm>found[3]
    api.encrypt_init = <CipherInit>found[4]
    api.encrypt_update = <CipherUpdate>found[5]
    api.encrypt_final = <CipherFinal>found[6]
    api.decrypt_init = <CipherInit>found[7]
    api.decrypt_update = <CipherUpdate>found[8]
    api.decrypt_final = <CipherFinal>found[9]
    api.control = <CipherControl>found[10]
    api.hmac = <Hmac>found[11]
    api_loaded = True
    loaded_from = path
    return path


cdef class SessionCipher:
    """One session key in one direction (sealing on the ingress, unsealing on the egress)."""

    def __cinit__(self, bint encrypting):
        if not api_loaded:
            raise RuntimeError("libcrypto is not loaded; call ddc.crypto.load_libcrypto() first")
        self.encrypting = encrypting
        self.context = api.new_context()
        if self.context == NULL:
            raise MemoryError()
        self.key_id = -1

    def __dealloc__(self):
        if self.context != NULL:
            api.free_context(self.context)

    cdef bint rekey(self, const uint8_t* master_key, int key_id, uint64_t session_id) noexcept nogil:
        cdef uint8_t info[INFO_BYTES]
        cdef uint8_t session_key[KEY_BYTES]
        cdef unsigned int derived = 0
        cdef int ok
        memcpy(info, SESSION_KEY_INFO, INFO_LABEL_BYTES)
        put64(info + INFO_LABEL_BYTES, session_id)
        info[INFO_BYTES - 1] = 1  # HKDF-Expand's block counter: one block is the whole 32-byte key
        self.ready = False
        if api.hmac(api.sha256(), master_key, KEY_BYTES, info, INFO_BYTES, session_key, &derived) == NULL:
            return False
        if self.encrypting:
            ok = api.encrypt_init(self.context, api.aes_256_gcm(), NULL, session_key, NULL)
        else:
            ok = api.decrypt_init(self.context, api.aes_256_gcm(), NULL, session_key, NULL)
        memset(session_key, 0, KEY_BYTES)
        if ok != 1 or derived != KEY_BYTES:
            return False
        self.key_id = key_id
        self.session_id = session_id
        self.ready = True
        return True

    cdef bint seal(self, const uint8_t* header, size_t header_length, const uint8_t* plain, size_t length,
                   uint64_t sequence, uint8_t* out) noexcept nogil:
        """Writes length bytes of ciphertext and then the tag to out."""
        cdef int written = 0
        memset(self.nonce, 0, 4)
        put64(self.nonce + 4, sequence)
        if not self.ready or api.encrypt_init(self.context, NULL, NULL, NULL, self.nonce) != 1:
            return False
        if api.encrypt_update(self.context, NULL, &written, header, <int>header_length) != 1:
            return False
        if length and api.encrypt_update(self.context, out, &written, plain, <int>length) != 1:
            return False
        if api.encrypt_final(self.context, out + length, &written) != 1:
            return False
        return api.control(self.context, CONTROL_GCM_GET_TAG, TAG_BYTES, out + length) == 1

    cdef bint unseal(self, const uint8_t* header, size_t header_length, const uint8_t* sealed, size_t length,
                     uint64_t sequence, uint8_t* out) noexcept nogil:
        """Checks the tag of length bytes (ciphertext then tag); writes the plaintext to out. False if forged."""
        cdef int written = 0
        cdef size_t plain_length
        if length < TAG_BYTES or not self.ready:
            return False
        plain_length = length - TAG_BYTES
        memset(self.nonce, 0, 4)
        put64(self.nonce + 4, sequence)
        if api.decrypt_init(self.context, NULL, NULL, NULL, self.nonce) != 1:
            return False
        if api.decrypt_update(self.context, NULL, &written, header, <int>header_length) != 1:
            return False
        if plain_length and api.decrypt_update(self.context, out, &written, sealed, <int>plain_length) != 1:
            return False
        if api.control(self.context, CONTROL_GCM_SET_TAG, TAG_BYTES, <void*>(sealed + plain_length)) != 1:
            return False
        return api.decrypt_final(self.context, out + plain_length, &written) == 1

    # ---- Python-facing, for tests and tools ----

    def set_key(self, bytes master_key, int key_id, uint64_t session_id):
        if len(master_key) != KEY_BYTES:
            raise ValueError(f"a key is {KEY_BYTES} bytes, not {len(master_key)}")
        if not self.rekey(<const uint8_t*><const char*>master_key, key_id, session_id):
            raise ValueError("libcrypto refused the key")

    def seal_bytes(self, bytes header, bytes plain, uint64_t sequence):
        out = bytearray(len(plain) + TAG_BYTES)
        cdef uint8_t[:] view = out
        if not self.seal(<const uint8_t*><const char*>header, len(header), <const uint8_t*><const char*>plain,
                         len(plain), sequence, &view[0]):
            raise ValueError("sealing failed")
        return bytes(out)

    def unseal_bytes(self, bytes header, bytes sealed, uint64_t sequence):
        if len(sealed) < TAG_BYTES:
            raise ValueError("shorter than a tag")
        out = bytearray(len(sealed) - TAG_BYTES + 1)
        cdef uint8_t[:] view = out
        if not self.unseal(<const uint8_t*><const char*>header, len(header), <const uint8_t*><const char*>sealed,
                           len(sealed), sequence, &view[0]):
            raise ValueError("authentication failed")
        return bytes(out[:len(out) - 1])

