# The texts of edge/'s error messages that a board round never meets (edge.cbor.errmsg(n, args)
# formats TEXT[n] % args): a malformed or refused message or data file, a bad argument.
# Kept out of the raising modules so that a board does not hold them in its heap as .mpy
# (docs/firmware.md, "The code a round imports"); imported only while an error is raised.
# Append new texts at the end (the numbers are in the raising modules); a text already here is
# raised by its number, not added twice.

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
    'key %d not allowed in kind %d',  # 33 frame._model_keys, frame._fields
    'config field %s',  # 34 frame.decode_config
    'snapshot has %d bytes, needs %d',  # 35 frame.apply_model, snapshot.SnapshotSink
    'indices not strictly ascending',  # 36 frame.apply_model
    'index %d >= d=%d',  # 37 frame.apply_model
    'delta value %d',  # 38 frame.apply_model
    'version %d, expected %d',  # 39 frame._fields
    'kind %d not expected here',  # 40 frame._fields
    'snapshot value %d',  # 41 frame.apply_model, snapshot.SnapshotSink
    'SQ values must all be +-m: vals[%d]=%r, m=%r',  # 42 frame.encode_update
    'key %d in a %s',  # 43 frame._fields
    'key 16 must be a bstr',  # 44 frame._fields
    'key after the model in a snapshot',  # 45 frame._fields
    '%s=%d out of range 0..%d',  # 46 frame._config
    'CBOR argument does not fit 64 bits',  # 47 cbor.put_head
    'CBOR argument must be >= 0',  # 48 cbor.put_head
    'truncated at byte %d',  # 49 cbor.read_head
    'break/reserved byte at %d',  # 50 cbor.read_head
    'indefinite or reserved length at byte %d',  # 51 cbor.read_head
    'truncated head at byte %d',  # 52 cbor.read_head
    'non-shortest head at byte %d',  # 53 cbor.read_head
    'two-byte simple value at byte %d',  # 54 cbor.read_head
    '%s must be a uint',  # 55 cbor.read_uint
    '%s must be a bstr',  # 56 cbor.read_bstr
    '%s runs past the end',  # 57 cbor.read_bstr, cbor.read_tstr
    '%s must be a tstr',  # 58 cbor.read_tstr
    '%s must be a bool',  # 59 cbor.read_bool
    'CBOR float at byte %d (floats travel in bstrs)',  # 60 cbor.read_head
    '%s is not valid UTF-8',  # 61 cbor.read_tstr
    'MAC key must be 32 bytes, got %d',  # 62 cose.check_key
    'kid must be 2 bytes',  # 63 cose.write_prefix
    'kid %02x%02x not accepted',  # 64 cose.check_kid
    'not CBOR tag 17',  # 65 cose.parse_head
    'COSE_Mac0 must be an array of 4',  # 66 cose.parse_head
    'protected header must be a bstr',  # 67 cose.parse_head
    'protected header must be exactly {1: 4} (HMAC 256/64)',  # 68 cose.parse_head
    'unprotected header must be {4: kid}',  # 69 cose.parse_head
    'kid must be a 2-byte bstr',  # 70 cose.parse_head
    'payload must be a bstr',  # 71 cose.parse_head
    'message truncated',  # 72 cose.parse, snapshot.SnapshotSink
    'tag must be an 8-byte bstr',  # 73 cose.parse, snapshot.SnapshotSink
    '%d bytes after the message',  # 74 cose.parse, snapshot.SnapshotSink
    'MAC does not verify',  # 75 cose.verify, snapshot.SnapshotSink
    '%s: not a CATD file: %d bytes, header needs %d',  # 76 dataheader.parse_header
    '%s: not a CATD file (magic %r, expected %r)',  # 77 dataheader.parse_header
    '%s: unsupported CATD version %d (this reader knows %d)',  # 78 dataheader.parse_header
    '%s: corrupt header (CRC-32 mismatch)',  # 79 dataheader.parse_header
    '%s: header size %d < %d',  # 80 dataheader.parse_header
    '%s: unknown layout code %d (0 dense, 1 csr)',  # 81 dataheader.parse_header
    '%s: unsupported label type %d (1 = uint32 class index)',  # 82 dataheader.parse_header
    '%s: unsupported value type %d (1 = float32)',  # 83 dataheader.parse_header
    '%s: d must be >= 1, header says %d',  # 84 dataheader.parse_header
    '%s: classes must be >= 2, header says %d',  # 85 dataheader.parse_header
    '%s: max nnz %d > d %d',  # 86 dataheader.parse_header
    '%s: dense header must have max nnz = d and total nnz = n*d',  # 87 dataheader.parse_header
    '%s: total nnz %d > n * max nnz %d',  # 88 dataheader.parse_header
    '%s: %d trailing bytes after the %d the header implies',  # 89 dataheader.read
    '%s: file is closed',  # 90 datafile.DataFile
    '%s: truncated in row %d (file changed since open?)',  # 91 datafile.DataFile
    '%s: row %d has label %d >= classes %d',  # 92 datafile.DataFile
    '%s: cannot open (%s)',  # 93 dataheader.read
    '%s: truncated: header implies %d bytes, file has %d',  # 94 dataheader.read
    '%s: row %d has nnz %d > header max %d',  # 95 datafile.DataFile
    'stage holds %d floats, the model has %d',  # 96 snapshot.SnapshotSink
    'a delta where a snapshot was expected',  # 97 snapshot.SnapshotSink
    'block_size must be a power of two from 16 to 1024, got %r',  # 98 coap.szx_for
    'path must be a str, got %r',  # 99 coap._split_path
    'Uri-Path segment longer than 255 bytes: %r',  # 100 coap._split_path
    'Uri-Query segment longer than 255 bytes',  # 101 coap._split_path
    'ack_timeout must be > 0, got %r',  # 102 coap.__init__
    'max_retransmit must be >= 0, got %r',  # 103 coap.__init__
    'random_factor must be >= 1, got %r',  # 104 coap.__init__
    'token_len must be 1..8, got %r',  # 105 coap.__init__
    'rx_size must be >= 32, got %r',  # 106 coap.__init__
    'unsupported method code %r',  # 107 coap.request
    'content_format must be 0..65535, got %r',  # 108 coap.request
    'server answered 2.31 Continue to the last Block1 block',  # 109 coap._block1
    'server answered %s without Block1 to block %d of %d bytes',  # 110 coap._block1
    'server asked for a larger Block1 size (SZX %d > %d)',  # 111 coap._block1
    'server acknowledged Block1 NUM %d, expected %d',  # 112 coap._block1
    'response starts with Block2 NUM %d, expected 0',  # 113 coap._finish
    'Block2 SZX 7 is reserved (RFC 7959 §2.2)',  # 114 coap._finish
    'Block2 block with M=1 is not a multiple of the block size',  # 115 coap._finish
    'Block2 transfer failed at offset %d with %s',  # 116 coap._finish
    'Block2 response without a Block2 option',  # 117 coap._finish
    'Block2 response for offset %d, expected %d',  # 118 coap._finish
    'resource changed during Block2 transfer (ETag differs)',  # 119 coap._finish
    'response body exceeds max_body=%d',  # 120 coap._finish
    'response carries unrecognised critical option %d',  # 121 coap._check_crit
    "kind must be 'logistic' or 'softmax', got %r",  # 122 learner.model_size, learner._check
    "logistic needs a binary file (classes=2), this one has classes=%d; use kind='softmax'",  # 123 learner._check
    'model has %d entries, %s on d=%d, classes=%d needs %d',  # 124 learner._check
    'grad_out has %d entries, model has %d',  # 125 learner._check
    'lam must be >= 0, got %r',  # 126 learner._check
    'data file %s has no rows',  # 127 learner._check
    'unknown scheme %r',  # 128 cat.scheme_id, compress._finish
    'unknown scheme %r (use identity, S, SQ or SS)',  # 129 cat.scheme_id
    "CAT: no feasible T (the smallest frame exceeds the link's largest message)",  # 130 cat.cat_choose
    'unknown rule %r',  # 131 cat.rule_id
    'unknown rule %r (use cat, catavg, fixed, alistarh, hybrid or identity)',  # 132 cat.rule_id
    'rule %s needs a parameter >= 1',  # 133 cat.__init__
    'identity rule sends the full gradient; no T to choose',  # 134 cat.choose
    'select: need k >= 1 and a non-empty gradient',  # 135 topk.select
    'select: index buffer holds %d, need %d',  # 136 topk.select
    'gradient entry %d is not finite (%r)',  # 137 topk.select
    'identity is not sparse: send g * scale as a full update',  # 138 compress.compress
    'compress: empty gradient',  # 139 compress.compress
    '%s: not hex',  # 140 startup.unhex
    '%s: must be 32 bytes (64 hex digits), got %d',  # 141 startup.unhex
    '%s: cannot read (%s)',  # 142 startup.load_config
    '%s: not JSON (%s)',  # 143 startup.load_config
    '%s: missing %r',  # 144 startup.load_config
    '%s: unknown transport %r (use coap, mqtt or serial)',  # 145 startup.load_config
    'config is for job %d, this node runs job %d',  # 146 node._setup
    'job uses cost profile %s, this node has %s',  # 147 node._setup
    'job model has d=%d, local data gives %d',  # 148 node._setup
    'SS needs a random source (XorShift32)',  # 149 compress._finish
    'the CoAP block_size must be a power of two from 16 to 1024 (RFC 7959 §2.2), got %r',  # 150 startup.block_size_mismatch
    "the CoAP client's block_size is %d B but cost profile %s prices %d B blocks: use cost profile "
    '%s-b%d (or block_size %d)',  # 151 startup.block_size_mismatch
    'transport %s, but cost profile %s prices nothing a node sends (no coap, mqtt or serial): '
    'give the node a %s profile',  # 152 startup.transport_mismatch
    'transport %s, but cost profile %s prices %s messages: give the node a %s profile or transport %s',  # 153 startup.transport_mismatch
    'SS drew more than %d entries 8 times; lower K or use a link with larger frames',  # 154 ss.sample
    'd=%d',  # 155 frame._check_d
    'fmt %d',  # 156 frame.apply_model
)
