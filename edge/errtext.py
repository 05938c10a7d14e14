# The texts of edge/'s error messages that a board round never meets (edge.cbor.errmsg(n, args)
# formats TEXT[n] % args): a malformed or refused message or data file, a bad argument.
# Kept out of the raising modules so that a board does not hold them in its heap as .mpy
# (docs/firmware.md, "The code a round imports"); imported only while an error is raised.
# Append new texts at the end: the numbers are in the raising modules.

TEXT = (
    'value %r is not finite in float32',  # 0 frame._put_value
    'scheme must be 0..3, got %r',  # 1 frame.encode_update
    'fmt must be 0 (float32) or 1 (float16), got %r',  # 2 frame.encode_update
    'd must be in 1..2**32-1, got %r',  # 3 frame.encode_update
    'T must be in 1..d, got T=%r d=%r',  # 4 frame.encode_update
    'identity needs T == d',  # 5 frame.encode_update
    'node must be in 0..65535, got %r',  # 6 frame.encode_update
    'job and round must be >= 0',  # 7 frame.encode_update
    'idx/vals hold fewer than T entries',  # 8 frame.encode_update
    'telemetry must be None or 4 floats',  # 9 frame.encode_update
    'buffer of %d bytes too small, frame needs %d',  # 10 frame.encode_update
    'internal: payload %d bytes, expected %d',  # 11 frame.encode_update
    '%s must be a 4-byte float32 bstr',  # 12 frame._read_f32
    '%s is not finite',  # 13 frame._read_f32
    'map keys must be uints',  # 14 frame._next_key
    'map keys not in ascending order',  # 15 frame._next_key
    'payload must be a map',  # 16 frame._fields
    'payload has bytes after the map',  # 17 frame._fields
    'config must be a map',  # 18 frame._config
    'version and kind are required',  # 19 frame._model_keys
    'job %d, expected %d',  # 20 frame._model_keys
    'message d=%d, model has %d',  # 21 frame._model_keys
    'config needs keys 0, 1, 2, 4, 15',  # 22 frame.decode_config
    'packed index padding bits not zero',  # 23 frame._iter_packed
    'T=%d > d=%d',  # 24 frame.apply_model
    'delta must carry key %d for d=%d, T=%d',  # 25 frame.apply_model
    '%d index bytes, needs %d',  # 26 frame.apply_model
    '%d value bytes, needs %d',  # 27 frame.apply_model
    'bitmap has %d bits set, T=%d',  # 28 frame.apply_model
    'value %r is not finite in float16 (|v| <= 65504)',  # 29 frame._put_value
    'value %r is out of float32 range',  # 30 frame._put_value
    'idx[%d]=%d not strictly ascending in [0, d)',  # 31 frame._write_indices
    'config key %d',  # 32 frame._config
    'key %d not allowed in kind %d',  # 33 frame._model_keys
    'config field %s',  # 34 frame.decode_config
    'snapshot has %d bytes, needs %d',  # 35 frame.apply_model
    'indices not strictly ascending',  # 36 frame.apply_model
    'index %d >= d=%d',  # 37 frame.apply_model
    'delta value %d',  # 38 frame.apply_model
    'idx[%d]=%d not strictly ascending in [0, d)',  # 39 frame._write_indices
    'version %d, expected %d',  # 40 frame._fields
    'kind %d not expected here',  # 41 frame._fields
    'snapshot value %d',  # 42 frame.apply_model
    'SQ values must all be +-m: vals[%d]=%r, m=%r',  # 43 frame.encode_update
    'SQ values must all be +-m: vals[%d]=%r, m=%r',  # 44 frame.encode_update
    'key %d in a %s',  # 45 frame._fields
    'key %d not allowed in kind %d',  # 46 frame._fields
    'key 16 must be a bstr',  # 47 frame._fields
    'key after the model in a snapshot',  # 48 frame._fields
    'payload has bytes after the map',  # 49 frame._fields
    '%s=%d out of range 0..%d',  # 50 frame._config
    'CBOR argument does not fit 64 bits',  # 51 cbor.put_head
    'CBOR argument must be >= 0',  # 52 cbor.put_head
    'truncated at byte %d',  # 53 cbor.read_head
    'break/reserved byte at %d',  # 54 cbor.read_head
    'indefinite or reserved length at byte %d',  # 55 cbor.read_head
    'truncated head at byte %d',  # 56 cbor.read_head
    'non-shortest head at byte %d',  # 57 cbor.read_head
    'two-byte simple value at byte %d',  # 58 cbor.read_head
    '%s must be a uint',  # 59 cbor.read_uint
    '%s must be a bstr',  # 60 cbor.read_bstr
    '%s runs past the end',  # 61 cbor.read_bstr
    '%s must be a tstr',  # 62 cbor.read_tstr
    '%s runs past the end',  # 63 cbor.read_tstr
    '%s must be a bool',  # 64 cbor.read_bool
    'CBOR float at byte %d (floats travel in bstrs)',  # 65 cbor.read_head
    '%s is not valid UTF-8',  # 66 cbor.read_tstr
    'MAC key must be 32 bytes, got %d',  # 67 cose.check_key
    'kid must be 2 bytes',  # 68 cose.write_prefix
    'kid %02x%02x not accepted',  # 69 cose.check_kid
    'not CBOR tag 17',  # 70 cose.parse_head
    'COSE_Mac0 must be an array of 4',  # 71 cose.parse_head
    'protected header must be a bstr',  # 72 cose.parse_head
    'protected header must be exactly {1: 4} (HMAC 256/64)',  # 73 cose.parse_head
    'unprotected header must be {4: kid}',  # 74 cose.parse_head
    'unprotected header must be {4: kid}',  # 75 cose.parse_head
    'kid must be a 2-byte bstr',  # 76 cose.parse_head
    'payload must be a bstr',  # 77 cose.parse_head
    'message truncated',  # 78 cose.parse
    'tag must be an 8-byte bstr',  # 79 cose.parse
    '%d bytes after the message',  # 80 cose.parse
    'MAC does not verify',  # 81 cose.verify
    '%s: not a CATD file: %d bytes, header needs %d',  # 82 datafile.parse_header
    '%s: not a CATD file (magic %r, expected %r)',  # 83 datafile.parse_header
    '%s: unsupported CATD version %d (this reader knows %d)',  # 84 datafile.parse_header
    '%s: corrupt header (CRC-32 mismatch)',  # 85 datafile.parse_header
    '%s: header size %d < %d',  # 86 datafile.parse_header
    '%s: unknown layout code %d (0 dense, 1 csr)',  # 87 datafile.parse_header
    '%s: unsupported label type %d (1 = uint32 class index)',  # 88 datafile.parse_header
    '%s: unsupported value type %d (1 = float32)',  # 89 datafile.parse_header
    '%s: d must be >= 1, header says %d',  # 90 datafile.parse_header
    '%s: classes must be >= 2, header says %d',  # 91 datafile.parse_header
    '%s: max nnz %d > d %d',  # 92 datafile.parse_header
    '%s: dense header must have max nnz = d and total nnz = n*d',  # 93 datafile.parse_header
    '%s: total nnz %d > n * max nnz %d',  # 94 datafile.parse_header
    '%s: %d trailing bytes after the %d the header implies',  # 95 datafile.DataFile
    '%s: file is closed',  # 96 datafile.DataFile
    '%s: truncated in row %d (file changed since open?)',  # 97 datafile.DataFile
    '%s: row %d has label %d >= classes %d',  # 98 datafile.DataFile
    '%s: cannot open (%s)',  # 99 datafile.DataFile
    '%s: truncated: header implies %d bytes, file has %d',  # 100 datafile.DataFile
    '%s: row %d has nnz %d > header max %d',  # 101 datafile.DataFile
    'stage holds %d floats, the model has %d',  # 102 snapshot.SnapshotSink
    'message truncated',  # 103 snapshot.SnapshotSink
    'tag must be an 8-byte bstr',  # 104 snapshot.SnapshotSink
    '%d bytes after the message',  # 105 snapshot.SnapshotSink
    'MAC does not verify',  # 106 snapshot.SnapshotSink
    'a delta where a snapshot was expected',  # 107 snapshot.SnapshotSink
    'snapshot has %d bytes, needs %d',  # 108 snapshot.SnapshotSink
    'snapshot value %d',  # 109 snapshot.SnapshotSink
    'message truncated',  # 110 snapshot.SnapshotSink
    'block_size must be a power of two from 16 to 1024, got %r',  # 111 coap.szx_for
    'path must be a str, got %r',  # 112 coap._split_path
    'Uri-Path segment longer than 255 bytes: %r',  # 113 coap._split_path
    'Uri-Query segment longer than 255 bytes',  # 114 coap._split_path
    'ack_timeout must be > 0, got %r',  # 115 coap.__init__
    'max_retransmit must be >= 0, got %r',  # 116 coap.__init__
    'random_factor must be >= 1, got %r',  # 117 coap.__init__
    'token_len must be 1..8, got %r',  # 118 coap.__init__
    'rx_size must be >= 32, got %r',  # 119 coap.__init__
    'unsupported method code %r',  # 120 coap.request
    'content_format must be 0..65535, got %r',  # 121 coap.request
    'server answered 2.31 Continue to the last Block1 block',  # 122 coap._block1
    'server answered %s without Block1 to block %d of %d bytes',  # 123 coap._block1
    'server asked for a larger Block1 size (SZX %d > %d)',  # 124 coap._block1
    'server acknowledged Block1 NUM %d, expected %d',  # 125 coap._block1
    'response starts with Block2 NUM %d, expected 0',  # 126 coap._finish
    'response starts with Block2 NUM %d, expected 0',  # 127 coap._finish
    'Block2 SZX 7 is reserved (RFC 7959 §2.2)',  # 128 coap._finish
    'Block2 block with M=1 is not a multiple of the block size',  # 129 coap._finish
    'Block2 transfer failed at offset %d with %s',  # 130 coap._finish
    'Block2 response without a Block2 option',  # 131 coap._finish
    'Block2 response for offset %d, expected %d',  # 132 coap._finish
    'resource changed during Block2 transfer (ETag differs)',  # 133 coap._finish
    'response body exceeds max_body=%d',  # 134 coap._finish
    'response carries unrecognised critical option %d',  # 135 coap._check_crit
    "kind must be 'logistic' or 'softmax', got %r",  # 136 learner.model_size
    "kind must be 'logistic' or 'softmax', got %r",  # 137 learner._check
    "logistic needs a binary file (classes=2), this one has classes=%d; use kind='softmax'",  # 138 learner._check
    'model has %d entries, %s on d=%d, classes=%d needs %d',  # 139 learner._check
    'grad_out has %d entries, model has %d',  # 140 learner._check
    'lam must be >= 0, got %r',  # 141 learner._check
    'data file %s has no rows',  # 142 learner._check
    'unknown scheme %r',  # 143 cat.scheme_id
    'unknown scheme %r (use identity, S, SQ or SS)',  # 144 cat.scheme_id
    "CAT: no feasible T (the smallest frame exceeds the link's largest message)",  # 145 cat.cat_choose
    'unknown rule %r',  # 146 cat.rule_id
    'unknown rule %r (use cat, catavg, fixed, alistarh, hybrid or identity)',  # 147 cat.rule_id
    'rule %s needs a parameter >= 1',  # 148 cat.__init__
    'identity rule sends the full gradient; no T to choose',  # 149 cat.choose
    'select: need k >= 1 and a non-empty gradient',  # 150 topk.select
    'select: index buffer holds %d, need %d',  # 151 topk.select
    'gradient entry %d is not finite (%r)',  # 152 topk.select
    'identity is not sparse: send g * scale as a full update',  # 153 compress.compress
    'compress: empty gradient',  # 154 compress.compress
    'unknown scheme %r',  # 155 compress._finish
    '%s: not hex',  # 156 board.unhex
    '%s: must be 32 bytes (64 hex digits), got %d',  # 157 board.unhex
    '%s: cannot read (%s)',  # 158 board.load_config
    '%s: not JSON (%s)',  # 159 board.load_config
    '%s: missing %r',  # 160 board.load_config
    '%s: unknown transport %r (use coap, mqtt or serial)',  # 161 board.load_config
    'config is for job %d, this node runs job %d',  # 162 node._setup
    'job uses cost profile %s, this node has %s',  # 163 node._setup
    'job model has d=%d, local data gives %d',  # 164 node._setup
    'SS needs a random source (XorShift32)',  # 165 ss.sample
)
