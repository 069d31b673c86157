"""An independent, pure-Python reading of docs/protocol.md, used to check the C implementation."""

from ddc._core import wire


def fragment(frame: bytes, *, session_id: int, frame_id: int, first_sequence: int, datagram_size: int) -> list[bytes]:
    capacity = datagram_size - wire.HEADER_BYTES
    count = max(1, -(-len(frame) // capacity))
    chunk = -(-len(frame) // count) if frame else 0
    return [
        wire.encode_datagram(wire.TYPE_DATA, session_id, first_sequence + index,
                             frame[index * chunk:(index + 1) * chunk], frame_id=frame_id,
                             fragment_index=index, fragment_count=count, frame_length=len(frame))
        for index in range(count)
    ]


def fragment_all(frames: list[bytes], *, session_id: int = 0xABCDEF, datagram_size: int = 200) -> list[list[bytes]]:
    """Datagrams for each frame, with sequence numbers running across frames as a sender assigns them."""
    result, sequence = [], 0
    for frame_id, frame in enumerate(frames):
        datagrams = fragment(frame, session_id=session_id, frame_id=frame_id, first_sequence=sequence,
                             datagram_size=datagram_size)
        sequence += len(datagrams)
        result.append(datagrams)
    return result


def session_key(master_key: bytes, session_id: int) -> bytes:
    """HKDF-Expand-SHA256(master key, "ddc v2 session key" || session id, 32), as docs/security.md states."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

    return HKDFExpand(hashes.SHA256(), 32, b"ddc v2 session key" + session_id.to_bytes(8, "big")).derive(master_key)


def sealed(datagram: bytes, master_key: bytes, key_id: int) -> bytes:
    """A plain datagram sealed with AES-256-GCM as docs/security.md specifies, by the cryptography package."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    fields = wire.decode_datagram(datagram)
    plain = fields.pop("payload")
    kind, session_id, sequence = fields.pop("type"), fields.pop("session_id"), fields.pop("sequence")
    for reserved in ("flags", "key_id"):
        fields.pop(reserved)

    def build(payload):
        return wire.encode_datagram(kind, session_id, sequence, payload, flags=1, key_id=key_id, **fields)

    header = bytearray(build(bytes(len(plain) + 16))[:wire.HEADER_BYTES])
    header[8:12] = bytes(4)
    nonce = bytes(4) + sequence.to_bytes(8, "big")
    return build(AESGCM(session_key(master_key, session_id)).encrypt(nonce, plain, bytes(header)))


def _gf_tables():
    exp, log, value = [0] * 510, [0] * 256, 1
    for power in range(255):
        exp[power] = exp[power + 255] = value
        log[value] = power
        value ^= value << 1  # times 3, the generator for polynomial 0x11B
        if value & 0x100:
            value ^= 0x11B
    return exp, log


_EXP, _LOG = _gf_tables()


def _gf_multiply(a: int, b: int) -> int:
    return _EXP[_LOG[a] + _LOG[b]] if a and b else 0


def parity_symbols(data_datagrams: list[bytes], parity_count: int) -> list[bytes]:
    """The parity payloads of one FEC block, from its data datagrams, as docs/protocol.md specifies."""
    symbols = [len(datagram).to_bytes(2, "big") + datagram for datagram in data_datagrams]
    length = max(map(len, symbols))
    parity = []
    for row in range(parity_count):
        out = bytearray(length)
        for index, symbol in enumerate(symbols):
            factor = _EXP[255 - _LOG[(128 + row) ^ index]]
            for position, byte in enumerate(symbol):
                out[position] ^= _gf_multiply(factor, byte)
        parity.append(bytes(out))
    return parity
