/*
 * journal_core.h: the native core of the Symphony journal.
 *
 * The on-disk format is specified in journal/FORMAT.md; the two structs below
 * are that specification in C, and tests/journal/test_format.py checks that
 * the offsets documented there equal the offsets the compiler gives here.
 *
 * All integers are little-endian (the core refuses to build on a big-endian
 * host). Offsets below are bytes from the start of the structure.
 *
 * Segment header (256 bytes, at offset 0 of every segment file)
 *
 *   Offset  Size  Field
 *   0       8     magic "SYMJRNL\0" (53 59 4D 4A 52 4E 4C 00)
 *   8       4     version (1)
 *   12      4     header_size (256)
 *   16      8     segment_size: file size in bytes
 *   24      8     first_seq: seq of the first record in this segment
 *   32      8     created_unix_ns: wall clock when the segment was started
 *   40      2     stream_id (0..1023)
 *   42      1     node_id_len (1..63)
 *   43      5     reserved, zero
 *   48      64    node_id, ASCII, zero padded
 *   112     16    epoch: the stream's random genesis value
 *   128     32    prev_hash: chain hash of record first_seq - 1 (zero for seq 1)
 *   160     4     header_crc: CRC32C of bytes 0..159
 *   164     4     reserved, zero
 *   168     8     write_end: offset past the last committed record (published)
 *   176     8     write_seq: seq of the last committed record (first_seq - 1 if none)
 *   184     8     synced_end: offset up to which records were made durable
 *   192     4     flags: bit 0 SEALED (the writer moved to the next segment)
 *   196     60    reserved, zero
 *
 * Record header (64 bytes, 8-byte aligned, followed by the body and zero padding
 * up to the next multiple of 8)
 *
 *   Offset  Size  Field
 *   0       4     crc: CRC32C of bytes 4 .. record_size - 1 (padding included)
 *   4       32    chain_hash: SHA-256(previous chain_hash || bytes 36 .. 64 + body_len - 1)
 *   36      4     body_len
 *   40      8     seq
 *   48      8     attestation_id
 *   56      2     type (1 GENESIS, 2 INGRESS, 3 OUTCOME, 4 HEARTBEAT, 5 DROPPED)
 *   58      2     flags, zero
 *   60      4     reserved, zero
 *
 * Threading: one thread appends (jn_append*), another may call jn_sync on the
 * same segment at the same time; the fields they share are accessed with
 * atomic acquire/release operations. Everything else is single-threaded.
 * Nothing here allocates memory; the caller owns every buffer.
 */
#ifndef SYMPHONY_JOURNAL_CORE_H
#define SYMPHONY_JOURNAL_CORE_H

#include <stddef.h>
#include <stdint.h>

/* The block between the CDEF markers is read verbatim by journal/_build.py as
 * the cffi declaration, so it holds only what cffi's parser accepts: integer
 * #defines, structs with fixed-size fields and prototypes. */
/* CDEF-BEGIN */

#define JN_VERSION 1
#define JN_SEGMENT_HEADER_SIZE 256
#define JN_RECORD_HEADER_SIZE 64
#define JN_CANONICAL_OFFSET 36
#define JN_HASH_SIZE 32
#define JN_EPOCH_SIZE 16
#define JN_NODE_ID_MAX 63
#define JN_BODY_MAX 1048576
#define JN_SEGMENT_MIN 65536
#define JN_FLAG_SEALED 1

/* How jn_file_allocate gives a segment its blocks (jn_set_allocation). */
#define JN_ALLOCATE_FALLOCATE 0
#define JN_ALLOCATE_ZERO 1

#define JN_TYPE_GENESIS 1
#define JN_TYPE_INGRESS 2
#define JN_TYPE_OUTCOME 3
#define JN_TYPE_HEARTBEAT 4
#define JN_TYPE_DROPPED 5
#define JN_TYPE_CHECKPOINT 6
#define JN_TYPE_MAX 6

/* Return codes (negative). Record validity reasons share the same space so a
 * scan can report exactly why a record is not valid (FORMAT.md rule F7). */
#define JN_OK 0
#define JN_E_SEGMENT_FULL -1
#define JN_E_ARGUMENT -2
#define JN_E_CLOSED -3
#define JN_E_FAILED -4
#define JN_R_END -10
#define JN_R_LENGTH -11
#define JN_R_CRC -12
#define JN_R_SEQ -13
#define JN_R_TYPE -14
#define JN_R_RESERVED -15
#define JN_R_CHAIN -16
#define JN_R_ALIGN -17
#define JN_R_GARBAGE -18
#define JN_H_MAGIC -20
#define JN_H_VERSION -21
#define JN_H_CRC -22
#define JN_H_SIZE -23
#define JN_H_FIELD -24

/* Scan outcome (jn_scan_result.status). */
#define JN_SCAN_CLEAN 0
#define JN_SCAN_INVALID 1

typedef struct jn_segment_header {
    uint8_t  magic[8];
    uint32_t version;
    uint32_t header_size;
    uint64_t segment_size;
    uint64_t first_seq;
    uint64_t created_unix_ns;
    uint16_t stream_id;
    uint8_t  node_id_len;
    uint8_t  reserved0[5];
    uint8_t  node_id[64];
    uint8_t  epoch[16];
    uint8_t  prev_hash[32];
    uint32_t header_crc;
    uint32_t reserved1;
    uint64_t write_end;
    uint64_t write_seq;
    uint64_t synced_end;
    uint32_t flags;
    uint8_t  reserved2[60];
} jn_segment_header;

typedef struct jn_record_header {
    uint32_t crc;
    uint8_t  chain_hash[32];
    uint32_t body_len;
    uint64_t seq;
    uint64_t attestation_id;
    uint16_t type;
    uint16_t flags;
    uint32_t reserved;
} jn_record_header;

/* The group-commit thread of a writer (opaque: it holds pthread objects). */
typedef struct jn_flusher jn_flusher;

/* The append state of one writer. Owned by the Python Writer (ffi.new). */
typedef struct jn_writer {
    uint8_t *base;            /* mapping of the current segment, NULL when closed */
    uint64_t size;            /* segment size in bytes */
    uint64_t pos;             /* offset of the next record */
    uint64_t next_seq;        /* seq the next record gets */
    uint8_t  last_hash[32];   /* chain hash of record next_seq - 1 */
    int32_t  failed;          /* nonzero after an unrecoverable I/O error */
    int32_t  tree_enabled;    /* nonzero: every append also extends the Merkle tree */
    jn_flusher *flusher;      /* group-commit thread to poke, or NULL */
    /* The stream epoch's RFC 9162 Merkle tree as a compact range: one hash per
     * set bit of tree_size, the largest (leftmost) subtree first. Leaf i is the
     * canonical bytes of record seq i + 1; tree_size == next_seq - 1 unless
     * tree_enabled is 0 (the tree is not known yet, or a benchmark turned it off).
 * 64 hashes cover any u64 size. */
    uint64_t tree_size;
    uint32_t tree_count;
    uint32_t tree_reserved;
    uint8_t  tree[64][32];
} jn_writer;

/* One validated record, as offsets into its segment. */
typedef struct jn_record_view {
    uint64_t pos;
    uint64_t record_size;
    uint64_t seq;
    uint64_t attestation_id;
    uint32_t body_len;
    uint16_t type;
    uint16_t reserved;
} jn_record_view;

typedef struct jn_scan_result {
    int32_t  status;          /* JN_SCAN_CLEAN or JN_SCAN_INVALID */
    int32_t  reason;          /* JN_R_* of the first invalid record */
    uint64_t end;             /* offset past the last valid record */
    uint64_t next_seq;        /* seq after the last valid record */
    uint64_t count;           /* valid records scanned */
    uint8_t  last_hash[32];   /* chain hash of the last valid record */
    uint64_t nonzero_end;     /* offset past the last nonzero byte at or after end */
    uint64_t valid_after_pos; /* offset of a CRC-valid later record, 0 if none */
} jn_scan_result;

/* One step of a batch read (jn_read_batch): records copied out and validated. */
typedef struct jn_batch_result {
    int32_t  stop;            /* why it stopped: JN_OK (count_max or copy_size reached) or
                                 the JN_R_* code of the record at `end`, as found in the copy */
    int32_t  reserved;
    uint64_t count;           /* records copied and validated */
    uint64_t end;             /* segment offset past the last of them */
    uint64_t next_seq;        /* seq after the last of them */
    uint64_t copied;          /* bytes written to copy_out: end - pos */
    uint8_t  last_hash[32];   /* chain hash of the last of them (prev_hash when count is 0) */
} jn_batch_result;

typedef struct jn_sync_result {
    uint64_t seq;             /* every record up to this seq is durable */
    uint64_t end;             /* ... which is every byte below this offset */
} jn_sync_result;

/* Hashing and checksums ------------------------------------------------ */

uint32_t jn_crc32c(const char *data, size_t length);
void jn_sha256(const char *data, size_t length, char *digest_out);
void jn_chain_hash(const char *prev_hash, const char *canonical, size_t length, char *digest_out);
int jn_cpu_features(void);
void jn_set_accel(int mask);

/* Merkle tree (RFC 9162) ----------------------------------------------------
 *
 * jn_merkle_leaf: SHA-256(0x00 || data). jn_merkle_node: SHA-256(0x01 || left || right).
 * jn_tree_reset: set the writer's compact range (resume from a CHECKPOINT record's
 *   frontier, or size 0 for a new stream) and turn upkeep off; returns JN_E_ARGUMENT
 *   unless count is the number of set bits of size and size <= next_seq - 1.
 * jn_tree_enable: turn upkeep on; JN_E_ARGUMENT unless tree_size == next_seq - 1.
 * jn_tree_push_canonical: while upkeep is off (resuming), push one record's leaf.
 * jn_tree_add_records: push the leaves of the records at [pos, end) of a mapped
 *   segment (already validated by a scan) onto the tree; the first must have seq
 *   tree_size + 1. Returns the number of leaves added or JN_E_ARGUMENT.
 * jn_tree_root: the root over the current compact range (SHA-256("") when empty). */
void jn_merkle_leaf(const char *data, size_t length, char *digest_out);
void jn_merkle_node(const char *left, const char *right, char *digest_out);
int jn_tree_reset(jn_writer *w, uint64_t size, const char *hashes, uint32_t count);
int jn_tree_enable(jn_writer *w);
void jn_tree_push_canonical(jn_writer *w, const char *canonical, size_t length);
int64_t jn_tree_add_records(jn_writer *w, const uint8_t *base, uint64_t size, uint64_t pos, uint64_t end);
void jn_tree_root(const jn_writer *w, char *root_out);

/* Segment files ----------------------------------------------------------- */

int jn_file_allocate(int fd, uint64_t size);
void jn_set_allocation(int mode);
int jn_allocation(void);
uint8_t *jn_map(int fd, uint64_t size, int writable, int *error_out);
int jn_unmap(uint8_t *base, uint64_t size);
int jn_prefault(uint8_t *base, uint64_t size);
int jn_segment_init(uint8_t *base, uint64_t size, uint64_t first_seq, uint64_t created_unix_ns,
                    uint16_t stream_id, const char *node_id, uint8_t node_id_len,
                    const char *epoch, const char *prev_hash);
int jn_segment_check(const uint8_t *base, uint64_t length, uint64_t file_size);
void jn_segment_seal(uint8_t *base);
int jn_segment_zero(uint8_t *base, uint64_t size, uint64_t from, uint64_t to,
                    uint64_t write_seq);
int jn_msync(uint8_t *base, uint64_t size, uint64_t from, uint64_t to);
int jn_sync(uint8_t *base, uint64_t size, jn_sync_result *out);
uint64_t jn_load_write_end(const uint8_t *base);

/* Records ------------------------------------------------------------------- */

int jn_record_check(const uint8_t *base, uint64_t size, uint64_t pos, uint64_t expected_seq,
                    const char *prev_hash, jn_record_view *out);
int jn_scan(const uint8_t *base, uint64_t size, uint64_t pos, uint64_t expected_seq,
            const char *prev_hash, jn_scan_result *out);
int jn_read_batch(const uint8_t *base, uint64_t size, uint64_t pos, uint64_t expected_seq,
                  const char *prev_hash, uint64_t count_max, char *copy_out, uint64_t copy_size,
                  jn_record_view *views_out, jn_batch_result *out);

/* Appending ----------------------------------------------------------------- */

int jn_writer_attach(jn_writer *w, uint8_t *base, uint64_t size, uint64_t pos,
                     uint64_t next_seq, const char *last_hash);
int64_t jn_append(jn_writer *w, uint16_t type, uint64_t attestation_id,
                  const char *body, uint32_t body_len, char *hash_out);
int64_t jn_append_genesis(jn_writer *w, const char *body, uint32_t body_len);
int64_t jn_append_many(jn_writer *w, uint32_t count, const uint16_t *types,
                       const uint64_t *attestation_ids, const char *bodies,
                       const uint32_t *lengths, char *hash_out);

/* Group commit ("batch" durability) ------------------------------------------ */

jn_flusher *jn_flusher_start(jn_writer *w, uint64_t interval_ns, uint64_t flush_records,
                             int notify_fd, int *error_out);
void jn_flusher_stop(jn_flusher *f);
void jn_flusher_lock(jn_flusher *f);
void jn_flusher_unlock(jn_flusher *f);
uint64_t jn_flusher_durable(jn_flusher *f);
void jn_flusher_set_durable(jn_flusher *f, uint64_t seq);
int jn_flusher_error(jn_flusher *f);
void jn_flusher_want_notify(jn_flusher *f, int want);
void jn_flusher_wake(jn_flusher *f);
void jn_flusher_want(jn_flusher *f, uint64_t seq);
uint64_t jn_flusher_syncs(jn_flusher *f);
void jn_flusher_set_log(jn_flusher *f, uint64_t *log, uint64_t capacity);
uint64_t jn_flusher_log_length(jn_flusher *f);
uint64_t jn_now_ns(void);

/* Benchmark entry points ------------------------------------------------------ */

int64_t jn_bench_append(jn_writer *w, const char *body, uint32_t body_len, uint64_t count,
                        uint64_t *latency_ns_out);
uint64_t jn_bench_memcpy(uint8_t *base, uint64_t size, const char *record, uint32_t length,
                         uint64_t count);

/* CDEF-END */

/*
 * Function reference (numpy style)
 * ================================
 *
 * jn_crc32c(data, length) -> uint32_t
 *     CRC32C (Castagnoli, reflected polynomial 0x82F63B78, initial value and
 *     final xor 0xFFFFFFFF) of `length` bytes. Uses SSE4.2 `crc32` when the CPU
 *     has it and jn_set_accel allows it, a lookup table otherwise; both give the
 *     same value (CRC32C("123456789") = 0xE3069283).
 *
 * jn_sha256(data, length, digest_out) -> void
 *     SHA-256 (FIPS 180-4) of `length` bytes into the 32 bytes at digest_out.
 *     Uses the SHA-NI instructions when present, a portable version otherwise.
 *
 * jn_chain_hash(prev_hash, canonical, length, digest_out) -> void
 *     SHA-256(prev_hash[0:32] || canonical[0:length]): the journal chain step.
 *
 * jn_cpu_features() -> int
 *     Bit 0: SSE4.2 CRC32 available; bit 1: SHA-NI available (with SSSE3 and
 *     SSE4.1). Already masked by jn_set_accel.
 *
 * jn_set_accel(mask) -> void
 *     Parameters: mask, the accelerations to allow (bits as above). Tests pass 0
 *     to force the portable paths and compare them with the accelerated ones.
 *
 * jn_file_allocate(fd, size) -> int
 *     Gives the new, empty file `size` bytes of real disk blocks, so a later
 *     store through the mapping can never fault on a full disk. Always
 *     posix_fallocate first (reserves the blocks, fails fast on a full disk).
 *     Mode JN_ALLOCATE_ZERO (the default) then writes zeros over the whole
 *     file and fdatasyncs it once: on ext4/XFS fallocated blocks are
 *     "unwritten" extents, and the first write-back into each one converts it
 *     in the filesystem journal; written blocks make each later sync a pure
 *     data write (PostgreSQL's wal_init_zero does the same for its WAL
 *     segments). The zero pages are then dropped from the page cache: written
 *     by pwrite they sit in large folios, whose dirty state is per folio, so
 *     every group commit would write back a whole folio instead of a page.
 *     JN_ALLOCATE_FALLOCATE stops after posix_fallocate (cheaper to prepare,
 *     benchmark comparison). Blocks; run it off the append path.
 *     Returns 0 or an errno value (ENOSPC, EDQUOT, EFBIG, EIO...).
 *
 * jn_set_allocation(mode) -> void
 *     Parameters: mode, JN_ALLOCATE_ZERO or JN_ALLOCATE_FALLOCATE, for every
 *     later jn_file_allocate in this process. The benchmark compares both.
 *
 * jn_allocation() -> int
 *     The current mode.
 *
 * jn_map(fd, size, writable, error_out) -> uint8_t *
 *     MAP_SHARED mapping of the whole file; NULL with *error_out = errno.
 *
 * jn_unmap(base, size) -> int
 *     munmap; 0 or errno.
 *
 * jn_prefault(base, size) -> int
 *     Faults every page of a writable mapping in for writing
 *     (MADV_POPULATE_WRITE, or a store per page on kernels before 5.14) so the
 *     append path never takes a first-touch fault. Returns 0 or errno.
 *
 * jn_segment_init(base, size, first_seq, created_unix_ns, stream_id, node_id,
 *                 node_id_len, epoch, prev_hash) -> int
 *     Writes a fresh segment header into an all-zero mapping (FORMAT.md F2-F5).
 *     Returns JN_OK or JN_E_ARGUMENT (bad size, node id or a nonzero mapping).
 *
 * jn_segment_check(base, length, file_size) -> int
 *     Validates a segment header read from `base` (`length` >= 256 bytes
 *     available) against the file's size: magic, version, header size, CRC,
 *     reserved bytes, node id. Returns JN_OK or a JN_H_* reason.
 *
 * jn_segment_seal(base) -> void
 *     Sets the SEALED flag (release store): no record will follow in this file.
 *
 * jn_segment_zero(base, size, from, to, write_seq) -> int
 *     Zeroes the torn tail [from, to) and republishes write_end = from and
 *     write_seq. synced_end is lowered to `from` if it was above.
 *
 * jn_msync(base, size, from, to) -> int
 *     msync(MS_SYNC) of the pages covering [from, to). 0 or errno. Blocks.
 *
 * jn_sync(base, size, out) -> int
 *     Makes every committed record of the segment durable: reads write_seq then
 *     write_end (acquire), msyncs from synced_end to write_end, then stores
 *     synced_end. out receives the seq and offset now durable. 0 or -errno.
 *     May run in a second thread while the writer appends.
 *
 * jn_load_write_end(base) -> uint64_t
 *     Acquire-load of the published write position, for followers.
 *
 * jn_record_check(base, size, pos, expected_seq, prev_hash, out) -> int
 *     Validates the record at `pos` (FORMAT.md F7): alignment, length, CRC,
 *     seq == expected_seq, type, reserved bytes, and chain_hash ==
 *     SHA-256(prev_hash || canonical). Returns JN_OK with *out filled, JN_R_END
 *     when the 64 header bytes are all zero or do not fit (no record here), or
 *     the JN_R_* reason the record is invalid.
 *
 * jn_scan(base, size, pos, expected_seq, prev_hash, out) -> int
 *     Validates records from `pos` until the first that is not valid. Fills
 *     *out; for JN_SCAN_INVALID also the extent of nonzero bytes after it and
 *     whether a CRC-valid record with a higher seq follows (FORMAT.md F9, F10).
 *     At most size / 64 iterations. Returns JN_OK.
 *
 * jn_read_batch(base, size, pos, expected_seq, prev_hash, count_max, copy_out,
 *               copy_size, views_out, out) -> int
 *     The reader's hot path: up to `count_max` consecutive valid records from
 *     `pos`, in one call instead of one jn_record_check per record. Each
 *     record is first copied from the mapping to `copy_out` (back to back, so
 *     the record at segment offset q is at copy_out + q - pos) and then
 *     validated on the copy with the rules of jn_record_check (F7: length,
 *     CRC, seq, type, reserved and padding bytes, chain hash from prev_hash or
 *     the previous copied record), so the bytes checked are exactly the bytes
 *     the caller hands out, even while a writer in another process appends.
 *     Stops at the first record that is not valid (or not there yet), after
 *     `count_max` records, or before a record that would not fit in the
 *     `copy_size - copied` bytes left; it never judges why a record is
 *     invalid (torn tail, rotation, corruption): the caller looks again at
 *     that offset with jn_record_check and decides (F9, F10, F12).
 *
 *     Parameters: base/size the mapped segment; pos (8-aligned, >= 256) and
 *     expected_seq, prev_hash (32 bytes) where to start; count_max >= 1, the
 *     capacity of views_out; copy_out with copy_size >= 64 + JN_BODY_MAX
 *     bytes, so that every call can take at least one record. Nothing is
 *     allocated. At most count_max iterations.
 *
 *     Returns JN_OK; *out says how many records were taken (views_out[0..count),
 *     positions are segment offsets), where the next one starts, its seq and
 *     the chain hash before it, and why the call stopped. cffi releases the
 *     GIL for the call, so other Python threads run while it copies and hashes.
 *
 * jn_writer_attach(w, base, size, pos, next_seq, last_hash) -> int
 *     Points the writer at a mapped, recovered segment. JN_OK or JN_E_ARGUMENT.
 *
 * jn_append(w, type, attestation_id, body, body_len, hash_out) -> int64_t
 *     Appends one record (type 2..5) and publishes it. Returns its seq and
 *     copies its chain hash to hash_out (32 bytes, may be NULL), or
 *     JN_E_SEGMENT_FULL (nothing written: rotate and retry), JN_E_ARGUMENT,
 *     JN_E_CLOSED, JN_E_FAILED. Never allocates, never blocks.
 *
 * jn_append_genesis(w, body, body_len) -> int64_t
 *     Appends the GENESIS record; only valid as seq 1.
 *
 * jn_append_many(w, count, types, attestation_ids, bodies, lengths, hash_out)
 *         -> int64_t
 *     Appends records whose bodies are concatenated in `bodies`; publishes the
 *     write position once. Stops before the first record that does not fit.
 *     Returns how many were appended (hash_out: chain hash of the last) or a
 *     negative JN_E_* code before anything was written.
 *
 * jn_flusher_start(w, interval_ns, flush_records, notify_fd, error_out) -> jn_flusher *
 *     Starts the group-commit thread of writer `w` ("batch" durability). It
 *     never takes the GIL: it sleeps on an eventfd until a record is wanted
 *     (jn_flusher_want), flush_records are pending, or unwanted records have
 *     waited 5 ms; then it msyncs the current segment. Back-to-back syncs
 *     (records wanted while the previous sync ran) start at least interval_ns
 *     apart unless flush_records are pending; a want that wakes a sleeping
 *     flusher is served at once. After each sync it publishes the durable seq and, when
 *     asked to (jn_flusher_want_notify), writes 1 to notify_fd (an eventfd the
 *     asyncio loop reads). Allocates once here, never on the append path.
 *     Returns NULL with *error_out = errno on failure.
 *
 * jn_flusher_stop(f) -> void
 *     Stops and joins the thread, detaches it from the writer, frees it.
 *
 * jn_flusher_lock(f), jn_flusher_unlock(f) -> void
 *     Excludes the flusher while the caller swaps segments (rotation): lock
 *     waits for a sync in progress to finish (the GIL is released meanwhile).
 *
 * jn_flusher_durable(f) -> uint64_t
 *     Highest seq known durable. jn_flusher_set_durable raises it (after the
 *     caller synced a segment itself, e.g. at rotation).
 *
 * jn_flusher_error(f) -> int
 *     errno of the sync that failed, 0 if none. After a failure the writer is
 *     marked failed and the flusher stops syncing.
 *
 * jn_flusher_want_notify(f, want) -> void
 *     Whether to write notify_fd after each sync (there are waiters).
 *
 * jn_flusher_wake(f) -> void
 *     Makes the flusher look for pending records now.
 *
 * jn_flusher_want(f, seq) -> void
 *     Someone needs record `seq` durable: raises the wanted seq and wakes a
 *     sleeping flusher. Appends alone only start the 5 ms bound.
 *
 * jn_flusher_syncs(f) -> uint64_t
 *     Number of syncs done (statistics).
 *
 * jn_flusher_set_log(f, log, capacity), jn_flusher_log_length(f)
 *     Benchmarks: after each sync the flusher appends (durable seq,
 *     jn_now_ns()) to `log` (2 * capacity uint64_t) while room remains.
 *
 * jn_now_ns() -> uint64_t
 *     CLOCK_MONOTONIC in nanoseconds.
 *
 * jn_bench_append(w, body, body_len, count, latency_ns_out) -> int64_t
 *     Appends up to `count` INGRESS records in a C loop, stopping when the
 *     segment is full; when latency_ns_out is not NULL stores each append's
 *     duration (CLOCK_MONOTONIC). Returns the number appended.
 *
 * jn_bench_memcpy(base, size, record, length, count) -> uint64_t
 *     Copies `record` back to back into the mapping `count` times (wrapping at
 *     the end): the ceiling an append can approach. Returns bytes copied.
 */

#endif /* SYMPHONY_JOURNAL_CORE_H */
