"""AES-256-GCM per datagram through a system crypto library, without the GIL.

Nothing cryptographic is written here, only calls into OpenSSL's libcrypto (EVP)
or GnuPG's libgcrypt. Why not the `cryptography` package (which DDC uses for
everything else about keys): its OpenSSL is linked statically behind a Python
API, so using it per datagram would put a Python call on the hot path. The
libraries are opened with dlopen at run time instead of being linked, so
building DDC needs no headers and a proxy without a key never touches them.

Why two libraries: sealing is the hot path's largest cost on an encrypted link,
and which library is faster depends on the machine. OpenSSL before 3.2 does not
use the VAES/VPCLMULQDQ instructions for GCM, libgcrypt 1.10 does; newer OpenSSL
is faster again. ddc/crypto.py checks each loaded library against the
`cryptography` package and keeps the fastest (docs/security.md).

A link's master key never encrypts anything itself. Each sender session uses
its own key, HKDF-Expand-SHA256(master key, "ddc v2 session key" || session id,
32 bytes), and each datagram the nonce 00000000 || sequence (big-endian). A
session never reuses a sequence, and two sessions share a key only if they share
a session id (docs/security.md). The 56-byte header, with its checksum field
zero, is the additional authenticated data; the 16-byte tag follows the payload.
"""

from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcpy, memset

from ddc._core.byteorder cimport put64
from ddc._core.posix cimport monotonic_ns
from ddc._core.wire cimport HEADER_BYTES, TAG_BYTES


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
                           const uint8_t* nonce, int encrypting) noexcept nogil
ctypedef int (*CipherUpdate)(void* context, uint8_t* out, int* out_length, const uint8_t* data,
                             int length) noexcept nogil
ctypedef int (*CipherFinal)(void* context, uint8_t* out, int* out_length) noexcept nogil
ctypedef int (*CipherControl)(void* context, int kind, int argument, void* pointer) noexcept nogil
ctypedef uint8_t* (*Hmac)(const void* digest, const void* key, int key_length, const uint8_t* data,
                          size_t length, uint8_t* out, unsigned int* out_length) noexcept nogil

ctypedef unsigned int GcryError
ctypedef const char* (*GcryCheckVersion)(const char* required) noexcept nogil
ctypedef GcryError (*GcryControl)(int command, ...) noexcept nogil
ctypedef GcryError (*GcryOpen)(void** handle, int algorithm, int mode, unsigned int flags) noexcept nogil
ctypedef void (*GcryClose)(void* handle) noexcept nogil
ctypedef GcryError (*GcrySetBytes)(void* handle, const void* data, size_t length) noexcept nogil
ctypedef GcryError (*GcryCrypt)(void* handle, void* out, size_t out_length, const void* data,
                                size_t length) noexcept nogil
ctypedef GcryError (*GcryCipherControl)(void* handle, int command, void* buffer, size_t length) noexcept nogil
ctypedef GcryError (*GcryMacOpen)(void** handle, int algorithm, unsigned int flags, void* context) noexcept nogil
ctypedef GcryError (*GcryMacRead)(void* handle, void* out, size_t* length) noexcept nogil

cdef enum:
    CONTROL_GCM_GET_TAG = 0x10
    CONTROL_GCM_SET_TAG = 0x11
    INFO_LABEL_BYTES = 18
    INFO_BYTES = INFO_LABEL_BYTES + 8 + 1
    # libgcrypt's ABI numbers (gcrypt.h)
    GCRY_CIPHER_AES256 = 9
    GCRY_CIPHER_MODE_GCM = 9
    GCRY_MAC_HMAC_SHA256 = 101
    GCRYCTL_FINALIZE = 5
    GCRYCTL_DISABLE_SECMEM = 37
    GCRYCTL_INITIALIZATION_FINISHED = 38
    GCRYCTL_INITIALIZATION_FINISHED_P = 39

cdef struct Libcrypto:
    NewContext new_context
    FreeContext free_context
    Algorithm aes_256_gcm
    Algorithm sha256
    CipherInit init
    CipherUpdate update
    CipherFinal final
    CipherControl control
    Hmac hmac

cdef struct Libgcrypt:
    GcryOpen open
    GcryClose close
    GcrySetBytes set_key
    GcrySetBytes set_nonce
    GcrySetBytes authenticate
    GcryCrypt encrypt
    GcryCrypt decrypt
    GcrySetBytes get_tag
    GcrySetBytes check_tag
    GcryCipherControl control
    GcryMacOpen mac_open
    GcrySetBytes mac_set_key
    GcrySetBytes mac_write
    GcryMacRead mac_read
    GcryClose mac_close

cdef const char* SESSION_KEY_INFO = b"ddc v2 session key"
cdef Libcrypto libcrypto
cdef Libgcrypt libgcrypt
cdef bint loaded[2]
cdef int active = NO_LIBRARY
loaded_from = {}
versions = {}
LIBRARY_NAMES = ("libcrypto", "libgcrypt")

LIBCRYPTO_SYMBOLS = ("EVP_CIPHER_CTX_new", "EVP_CIPHER_CTX_free", "EVP_aes_256_gcm", "EVP_sha256",
                     "EVP_CipherInit_ex", "EVP_CipherUpdate", "EVP_CipherFinal_ex", "EVP_CIPHER_CTX_ctrl",
                     "HMAC", "OpenSSL_version")
LIBGCRYPT_SYMBOLS = ("gcry_cipher_open", "gcry_cipher_close", "gcry_cipher_setkey", "gcry_cipher_setiv",
                     "gcry_cipher_authenticate", "gcry_cipher_encrypt", "gcry_cipher_decrypt",
                     "gcry_cipher_gettag", "gcry_cipher_checktag", "gcry_cipher_ctl", "gcry_mac_open",
                     "gcry_mac_setkey", "gcry_mac_write", "gcry_mac_read", "gcry_mac_close",
                     "gcry_check_version", "gcry_control")
LIBGCRYPT_OLDEST = "1.8.0"
KEY_LENGTH = KEY_BYTES


cdef list open_symbols(str path, tuple names, void** found):
    """dlopens path and fills found with its symbols; raises OSError naming what is missing."""
    cdef void* handle = dlopen(path.encode(), RTLD_NOW | RTLD_LOCAL)
    if handle == NULL:
        raise OSError(f"cannot open {path}: {(<bytes>dlerror()).decode(errors='replace')}")
    missing = []
    for i, name in enumerate(names):
        found[i] = dlsym(handle, (<str>name).encode())
        if found[i] == NULL:
            missing.append(name)
    return missing


def load_libcrypto(str path):
    """Opens OpenSSL's libcrypto at path (a file name the dynamic linker resolves, or a full path).

    Raises OSError naming what is missing; loading twice is harmless."""
    cdef void* found[10]
    if loaded[LIBCRYPTO]:
        return loaded_from["libcrypto"]
    missing = open_symbols(path, LIBCRYPTO_SYMBOLS, found)
    if missing:
        raise OSError(f"{path} has no {missing[0]}; it is not an OpenSSL 1.1 or 3.x libcrypto")
    libcrypto.new_context = <NewContext>found[0]
    libcrypto.free_context = <FreeContext>found[1]
    libcrypto.aes_256_gcm = <Algorithm>found[2]
    libcrypto.sha256 = <Algorithm>found[3]
    libcrypto.init = <CipherInit>found[4]
    libcrypto.update = <CipherUpdate>found[5]
    libcrypto.final = <CipherFinal>found[6]
    libcrypto.control = <CipherControl>found[7]
    libcrypto.hmac = <Hmac>found[8]
    versions["libcrypto"] = (<bytes>(<const char* (*)(int) noexcept nogil>found[9])(0)).decode(errors="replace")
    loaded[LIBCRYPTO] = True
    loaded_from["libcrypto"] = path
    return path


def load_libgcrypt(str path):
    """Opens GnuPG's libgcrypt (1.8 or newer) at path, initialising it unless its host program already has.

    Raises OSError naming what is missing or too old; loading twice is harmless."""
    cdef void* found[17]
    cdef GcryCheckVersion check_version
    cdef GcryControl control
    cdef const char* version
    if loaded[LIBGCRYPT]:
        return loaded_from["libgcrypt"]
    missing = open_symbols(path, LIBGCRYPT_SYMBOLS, found)
    if missing:
        raise OSError(f"{path} has no {missing[0]}; it is not libgcrypt {LIBGCRYPT_OLDEST} or newer")
    check_version = <GcryCheckVersion>found[15]
    control = <GcryControl>found[16]
    # Only a library its program has not initialised is initialised here, and without secure memory:
    # session keys live in the cipher handle either way.
    if not control(GCRYCTL_INITIALIZATION_FINISHED_P):
        version = check_version(LIBGCRYPT_OLDEST.encode())
        if version == NULL:
            raise OSError(f"{path} is older than libgcrypt {LIBGCRYPT_OLDEST}")
        control(GCRYCTL_DISABLE_SECMEM, 0)
        control(GCRYCTL_INITIALIZATION_FINISHED, 0)
    version = check_version(NULL)
    libgcrypt.open = <GcryOpen>found[0]
    libgcrypt.close = <GcryClose>found[1]
    libgcrypt.set_key = <GcrySetBytes>found[2]
    libgcrypt.set_nonce = <GcrySetBytes>found[3]
    libgcrypt.authenticate = <GcrySetBytes>found[4]
    libgcrypt.encrypt = <GcryCrypt>found[5]
    libgcrypt.decrypt = <GcryCrypt>found[6]
    libgcrypt.get_tag = <GcrySetBytes>found[7]
    libgcrypt.check_tag = <GcrySetBytes>found[8]
    libgcrypt.control = <GcryCipherControl>found[9]
    libgcrypt.mac_open = <GcryMacOpen>found[10]
    libgcrypt.mac_set_key = <GcrySetBytes>found[11]
    libgcrypt.mac_write = <GcrySetBytes>found[12]
    libgcrypt.mac_read = <GcryMacRead>found[13]
    libgcrypt.mac_close = <GcryClose>found[14]
    versions["libgcrypt"] = "libgcrypt " + (<bytes>version).decode(errors="replace")
    loaded[LIBGCRYPT] = True
    loaded_from["libgcrypt"] = path
    return path


cdef int library_named(str name) except -1:
    if name not in LIBRARY_NAMES:
        raise ValueError(f"unknown crypto library {name!r}; choose one of {', '.join(LIBRARY_NAMES)}")
    if not loaded[LIBRARY_NAMES.index(name)]:
        raise RuntimeError(f"{name} is not loaded; call ddc.crypto.load_sealing_library() first")
    return LIBRARY_NAMES.index(name)


def use_library(str name):
    """Ciphers made from now on seal and unseal with this loaded library ("libcrypto" or "libgcrypt")."""
    global active
    active = library_named(name)


def library_in_use():
    """The library chosen with use_library, or None before the choice."""
    return None if active == NO_LIBRARY else LIBRARY_NAMES[active]


def sealing_seconds(str name, size_t datagram_bytes, unsigned int count):
    """Seconds this library takes to seal count datagrams of datagram_bytes, measured in C without the GIL."""
    cdef SessionCipher cipher = SessionCipher(True, name)
    cdef uint8_t header[HEADER_BYTES]
    cdef bytearray buffer = bytearray(2 * datagram_bytes + TAG_BYTES)
    cdef uint8_t* data = <uint8_t*><char*>buffer
    cdef int64_t start, end
    cdef unsigned int i
    cdef bint ok = True
    memset(header, 0, HEADER_BYTES)
    cipher.set_key(bytes(KEY_BYTES), 0, 1)
    with nogil:
        start = monotonic_ns()
        for i in range(count):
            ok = cipher.seal(header, HEADER_BYTES, data, datagram_bytes, i, data + datagram_bytes) and ok
        end = monotonic_ns()
    if not ok:
        raise ValueError(f"{name} failed to seal")
    return (end - start) * 1e-9


cdef class SessionCipher:
    """One session key in one direction (sealing on the ingress, unsealing on the egress)."""

    def __cinit__(self, bint encrypting, str library=None):
        self.library = active if library is None else library_named(library)
        if self.library == NO_LIBRARY:
            raise RuntimeError("no crypto library is chosen; call ddc.crypto.load_sealing_library() first")
        self.encrypting = encrypting
        self.context = NULL
        if self.library == LIBCRYPTO:
            self.context = libcrypto.new_context()
        elif libgcrypt.open(&self.context, GCRY_CIPHER_AES256, GCRY_CIPHER_MODE_GCM, 0) != 0:
            self.context = NULL
        if self.context == NULL:
            raise MemoryError()
        self.key_id = -1

    def __dealloc__(self):
        if self.context != NULL:
            if self.library == LIBCRYPTO:
                libcrypto.free_context(self.context)
            else:
                libgcrypt.close(self.context)

    cdef bint hmac_sha256(self, const uint8_t* key, const uint8_t* data, size_t length,
                          uint8_t* out) noexcept nogil:
        cdef unsigned int derived = 0
        cdef size_t read = KEY_BYTES
        cdef void* mac = NULL
        cdef bint ok
        if self.library == LIBCRYPTO:
            return (libcrypto.hmac(libcrypto.sha256(), key, KEY_BYTES, data, length, out, &derived) != NULL
                    and derived == KEY_BYTES)
        if libgcrypt.mac_open(&mac, GCRY_MAC_HMAC_SHA256, 0, NULL) != 0:
            return False
        ok = (libgcrypt.mac_set_key(mac, key, KEY_BYTES) == 0 and libgcrypt.mac_write(mac, data, length) == 0
              and libgcrypt.mac_read(mac, out, &read) == 0 and read == KEY_BYTES)
        libgcrypt.mac_close(mac)
        return ok

    cdef bint rekey(self, const uint8_t* master_key, int key_id, uint64_t session_id) noexcept nogil:
        cdef uint8_t info[INFO_BYTES]
        cdef uint8_t session_key[KEY_BYTES]
        cdef bint ok
        memcpy(info, SESSION_KEY_INFO, INFO_LABEL_BYTES)
        put64(info + INFO_LABEL_BYTES, session_id)
        info[INFO_BYTES - 1] = 1  # HKDF-Expand's block counter: one block is the whole 32-byte key
        self.ready = False
        ok = self.hmac_sha256(master_key, info, INFO_BYTES, session_key)
        if ok and self.library == LIBGCRYPT:
            ok = libgcrypt.set_key(self.context, session_key, KEY_BYTES) == 0
        elif ok:
            ok = libcrypto.init(self.context, libcrypto.aes_256_gcm(), NULL, session_key, NULL, self.encrypting) == 1
        memset(session_key, 0, KEY_BYTES)
        if not ok:
            return False
        self.key_id = key_id
        self.session_id = session_id
        self.ready = True
        return True

    cdef void use_nonce(self, uint64_t sequence) noexcept nogil:
        memset(self.nonce, 0, 4)
        put64(self.nonce + 4, sequence)

    cdef bint gcrypt_begin(self, const uint8_t* header, size_t header_length) noexcept nogil:
        """libgcrypt's GCM: this datagram's nonce and header, and the next call is the last over its data."""
        return (libgcrypt.set_nonce(self.context, self.nonce, NONCE_BYTES) == 0
                and libgcrypt.authenticate(self.context, header, header_length) == 0
                and libgcrypt.control(self.context, GCRYCTL_FINALIZE, NULL, 0) == 0)

    cdef bint libcrypto_pass(self, const uint8_t* header, size_t header_length, const uint8_t* data,
                             size_t length, uint8_t* out) noexcept nogil:
        """libcrypto's GCM in the cipher's own direction: this datagram's nonce and header, then its data."""
        cdef int written = 0
        return (libcrypto.init(self.context, NULL, NULL, NULL, self.nonce, -1) == 1
                and libcrypto.update(self.context, NULL, &written, header, <int>header_length) == 1
                and (length == 0 or libcrypto.update(self.context, out, &written, data, <int>length) == 1))

    cdef bint seal(self, const uint8_t* header, size_t header_length, const uint8_t* plain, size_t length,
                   uint64_t sequence, uint8_t* out) noexcept nogil:
        """Writes length bytes of ciphertext and then the tag to out."""
        cdef int written = 0
        if not self.ready:
            return False
        self.use_nonce(sequence)
        if self.library == LIBGCRYPT:
            return (self.gcrypt_begin(header, header_length)
                    and libgcrypt.encrypt(self.context, out, length, plain, length) == 0
                    and libgcrypt.get_tag(self.context, out + length, TAG_BYTES) == 0)
        return (self.libcrypto_pass(header, header_length, plain, length, out)
                and libcrypto.final(self.context, out + length, &written) == 1
                and libcrypto.control(self.context, CONTROL_GCM_GET_TAG, TAG_BYTES, out + length) == 1)

    cdef bint unseal(self, const uint8_t* header, size_t header_length, const uint8_t* sealed, size_t length,
                     uint64_t sequence, uint8_t* out) noexcept nogil:
        """Checks the tag of length bytes (ciphertext then tag); writes the plaintext to out. False if forged."""
        cdef int written = 0
        cdef size_t plain_length
        if length < TAG_BYTES or not self.ready:
            return False
        plain_length = length - TAG_BYTES
        self.use_nonce(sequence)
        if self.library == LIBGCRYPT:
            return (self.gcrypt_begin(header, header_length)
                    and libgcrypt.decrypt(self.context, out, plain_length, sealed, plain_length) == 0
                    and libgcrypt.check_tag(self.context, sealed + plain_length, TAG_BYTES) == 0)
        return (self.libcrypto_pass(header, header_length, sealed, plain_length, out)
                and libcrypto.control(self.context, CONTROL_GCM_SET_TAG, TAG_BYTES, <void*>(sealed + plain_length)) == 1
                and libcrypto.final(self.context, out + plain_length, &written) == 1)

    # ---- Python-facing, for tests and tools ----

    def set_key(self, bytes master_key, int key_id, uint64_t session_id):
        if len(master_key) != KEY_BYTES:
            raise ValueError(f"a key is {KEY_BYTES} bytes, not {len(master_key)}")
        if not self.rekey(<const uint8_t*><const char*>master_key, key_id, session_id):
            raise ValueError(f"{LIBRARY_NAMES[self.library]} refused the key")

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

