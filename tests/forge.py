"""What an attacker on the low side can build without a key: valid-looking datagrams and FEC blocks
whose parity is computed correctly over forged data, so the egress rebuilds exactly what the attacker chose."""

from ddc._core import fec, wire

SESSION = (1 << 32) | 7


def with_checksum(datagram: bytes) -> bytes:
    """The same bytes with a correct CRC-32C, as anyone can compute: what gets a forgery past the checksum."""
    if len(datagram) < wire.HEADER_BYTES:
        return bytes(datagram)
    out = bytearray(datagram)
    out[8:12] = bytes(4)
    out[8:12] = wire.checksum(bytes(out)).to_bytes(4, "big")
    return bytes(out)


def data_datagram(sequence: int, payload: bytes, *, frame_id: int, block: int = 0, index: int = 0, count: int = 0,
                  session_id: int = SESSION) -> bytes:
    """A one-fragment frame, placed in FEC block `block` at `index` of `count` when count is set."""
    return wire.encode_datagram(wire.TYPE_DATA, session_id, sequence, payload, frame_id=frame_id,
                                fec_block=block, fec_index=index, fec_count=count)


def parity_for(datagrams: list[bytes], parity_count: int, *, block: int, first_row: int = 0,
               session_id: int = SESSION, symbol_length: int | None = None) -> list[bytes]:
    """Parity datagrams for rows first_row.. of a block whose data symbols are these datagrams (any bytes: a
    rebuilt "datagram" is whatever the data symbols were). symbol_length pads the symbols, as a longer
    block member would."""
    symbols = [len(datagram).to_bytes(2, "big") + datagram for datagram in datagrams]
    if symbol_length:
        symbols = [symbol.ljust(symbol_length, b"\0") for symbol in symbols]
    rows = fec.encode(symbols, first_row + parity_count)[first_row:]
    count = len(datagrams)
    return [wire.encode_datagram(wire.TYPE_PARITY, session_id, wire.PARITY_SEQUENCE | (block << 8) | (first_row + row),
                                 symbol, fec_block=block, fec_index=count + first_row + row, fec_count=count)
            for row, symbol in enumerate(rows)]


def nested_parity(depth: int, *, session_id: int = SESSION) -> bytes:
    """One parity datagram whose only data symbol is a parity datagram of the next block, `depth` deep: a
    receiver that feeds rebuilt datagrams back through itself recurses once a level."""
    inner = data_datagram(0, b"x", frame_id=0, session_id=session_id)
    for level in range(depth, 0, -1):
        inner = parity_for([inner], 1, block=level, session_id=session_id)[0]
    return inner
