"""An independent, pure-Python reading of docs/protocol.md, used to check the C implementation."""

from ddc._core import wire


def fragment(frame: bytes, *, session_id: int, frame_id: int, first_sequence: int, datagram_size: int) -> list[bytes]:
    capacity = datagram_size - wire.HEADER_BYTES
    count = max(1, -(-len(frame) // capacity))
    chunk = -(-len(frame) // count) if frame else 0
    return [
        wire.encode_datagram(wire.DATA, session_id, first_sequence + index,
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
