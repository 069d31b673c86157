# RecordBatch v2 as producers send it (batches.pyx): the batch header's layout and the attribute bits.
cpdef enum:
    BATCH_HEADER_BYTES = 61      # base offset .. record count
    LENGTH_FIELD_END = 12        # base offset (8) and batch length (4): the length counts what follows
    CRC_COVERS_FROM = 21         # attributes .. end
    MAGIC_V2 = 2
    COMPRESSION_MASK = 0x07
    LOG_APPEND_TIME = 0x08
    TRANSACTIONAL = 0x10
    CONTROL = 0x20

cpdef enum:
    # what is wrong with a batch, as Kafka's error codes say it
    BATCH_CORRUPT = 2            # CORRUPT_MESSAGE: truncated, bad CRC, or records that do not add up
    BATCH_TOO_LARGE = 10         # MESSAGE_TOO_LARGE: a record over max_record_size
    BATCH_INVALID = 87           # INVALID_RECORD: well formed, refused (offset deltas, magic)
