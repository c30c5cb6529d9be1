/*
 * journal_core.c: append, check and scan records of the Symphony journal.
 *
 * The format is specified in journal/FORMAT.md and summarised in
 * journal_core.h; every function is documented there. This file holds only
 * the hot path (append, CRC32C, SHA-256) and the record checks a reader needs;
 * rotation, retention and recovery decisions live in Python (journal/_writer.py).
 *
 * Rules kept here:
 * - The append path never allocates and never blocks: segments are
 *   preallocated and pre-faulted by the caller before they are attached.
 * - Assertions are always on (JN_ASSERT does not depend on NDEBUG): an offset
 *   or length is checked before a store into the mapping, and a reader checks
 *   CRC, seq and chain after every load. A failed assertion is a programmer
 *   error and aborts the process rather than write a wrong journal.
 * - Every loop has a bound derived from its arguments.
 */
#define _GNU_SOURCE
#include "journal_core.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define JN_X86 1
#else
#define JN_X86 0
#endif

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the journal format is little-endian and this core stores integers natively"
#endif

#define JN_ASSERT(condition)                                                          \
    do {                                                                              \
        if (__builtin_expect(!(condition), 0)) jn_panic(__FILE__, __LINE__, #condition); \
    } while (0)

static void jn_panic(const char *file, int line, const char *condition) {
    fprintf(stderr, "journal_core: assertion failed at %s:%d: %s\n", file, line, condition);
    abort();
}

/* The layout is the format: a change here must be a version change. */
_Static_assert(sizeof(jn_segment_header) == JN_SEGMENT_HEADER_SIZE, "segment header size");
_Static_assert(offsetof(jn_segment_header, header_crc) == 160, "header_crc offset");
_Static_assert(offsetof(jn_segment_header, write_end) == 168, "write_end offset");
_Static_assert(offsetof(jn_segment_header, flags) == 192, "flags offset");
_Static_assert(sizeof(jn_record_header) == JN_RECORD_HEADER_SIZE, "record header size");
_Static_assert(offsetof(jn_record_header, body_len) == JN_CANONICAL_OFFSET, "canonical offset");
_Static_assert(offsetof(jn_record_header, seq) == 40, "seq offset");

static const uint8_t JN_MAGIC[8] = {'S', 'Y', 'M', 'J', 'R', 'N', 'L', 0};

#define JN_ACCEL_CRC 1
#define JN_ACCEL_SHA 2

static int jn_features_detected;  /* what the CPU has */
static int jn_features_enabled;   /* what we use: detected & mask */

/* ------------------------------------------------------------------------- */
/* CRC32C                                                                     */
/* ------------------------------------------------------------------------- */

static uint32_t crc32c_table[8][256];

static void crc32c_table_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t crc = i;
        for (int bit = 0; bit < 8; bit++) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
        crc32c_table[0][i] = crc;
    }
    /* Slicing-by-8: table k advances a byte that is k positions further back. */
    for (uint32_t i = 0; i < 256; i++) {
        for (int k = 1; k < 8; k++) {
            uint32_t prev = crc32c_table[k - 1][i];
            crc32c_table[k][i] = (prev >> 8) ^ crc32c_table[0][prev & 0xFF];
        }
    }
}

static uint32_t crc32c_portable(uint32_t crc, const uint8_t *p, size_t n) {
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        v ^= crc;
        crc = crc32c_table[7][v & 0xFF] ^ crc32c_table[6][(v >> 8) & 0xFF] ^
              crc32c_table[5][(v >> 16) & 0xFF] ^ crc32c_table[4][(v >> 24) & 0xFF] ^
              crc32c_table[3][(v >> 32) & 0xFF] ^ crc32c_table[2][(v >> 40) & 0xFF] ^
              crc32c_table[1][(v >> 48) & 0xFF] ^ crc32c_table[0][v >> 56];
        p += 8;
        n -= 8;
    }
    for (size_t i = 0; i < n; i++) crc = (crc >> 8) ^ crc32c_table[0][(crc ^ p[i]) & 0xFF];
    return crc;
}

#if JN_X86
__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t crc, const uint8_t *p,
                                                               size_t n) {
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    for (size_t i = 0; i < n; i++) c32 = _mm_crc32_u8(c32, p[i]);
    return c32;
}
#endif

static inline uint32_t crc32c(const uint8_t *p, size_t n) {
#if JN_X86
    if (jn_features_enabled & JN_ACCEL_CRC) return ~crc32c_sse42(0xFFFFFFFFu, p, n);
#endif
    return ~crc32c_portable(0xFFFFFFFFu, p, n);
}

uint32_t jn_crc32c(const char *data, size_t length) {
    return crc32c((const uint8_t *)data, length);
}

/* ------------------------------------------------------------------------- */
/* SHA-256 (FIPS 180-4)                                                       */
/* ------------------------------------------------------------------------- */

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static const uint32_t SHA256_INIT[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static inline uint32_t load_be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void sha256_blocks_portable(uint32_t state[8], const uint8_t *p, size_t blocks) {
    for (size_t b = 0; b < blocks; b++, p += 64) {
        uint32_t w[64];
        for (int i = 0; i < 16; i++) w[i] = load_be32(p + 4 * i);
        for (int i = 16; i < 64; i++) {
            uint32_t s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = state[0], bb = state[1], c = state[2], d = state[3];
        uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
        for (int i = 0; i < 64; i++) {
            uint32_t t1 = h + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) +
                          K256[i] + w[i];
            uint32_t t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & bb) ^ (a & c) ^ (bb & c));
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = bb;
            bb = a;
            a = t1 + t2;
        }
        state[0] += a;
        state[1] += bb;
        state[2] += c;
        state[3] += d;
        state[4] += e;
        state[5] += f;
        state[6] += g;
        state[7] += h;
    }
}

#if JN_X86
/* SHA-NI: 16 groups of 4 rounds. The four message registers rotate; from
 * group 3 on, each group finishes the schedule of the message four groups
 * ahead (sha256msg1 two groups early, sha256msg2 with alignr one group early),
 * following Intel's reference flow for the SHA extensions. */
__attribute__((target("sha,sse4.1,ssse3"))) static void sha256_blocks_shani(uint32_t state[8],
                                                                            const uint8_t *p,
                                                                            size_t blocks) {
    const __m128i shuffle_mask = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_loadu_si128((const __m128i *)&state[0]);
    __m128i state1 = _mm_loadu_si128((const __m128i *)&state[4]);
    tmp = _mm_shuffle_epi32(tmp, 0xB1);                /* CDAB */
    state1 = _mm_shuffle_epi32(state1, 0x1B);          /* EFGH */
    __m128i state0 = _mm_alignr_epi8(tmp, state1, 8);  /* ABEF */
    state1 = _mm_blend_epi16(state1, tmp, 0xF0);       /* CDGH */

    for (size_t b = 0; b < blocks; b++, p += 64) {
        __m128i abef_save = state0;
        __m128i cdgh_save = state1;
        __m128i m[4];
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) {
            if (i < 4) {
                m[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), shuffle_mask);
            }
            __m128i msg = _mm_add_epi32(m[i & 3], _mm_loadu_si128((const __m128i *)&K256[4 * i]));
            state1 = _mm_sha256rnds2_epu32(state1, state0, msg);
            if (i >= 3 && i <= 14) {
                __m128i t = _mm_alignr_epi8(m[i & 3], m[(i - 1) & 3], 4);
                m[(i + 1) & 3] = _mm_add_epi32(m[(i + 1) & 3], t);
                m[(i + 1) & 3] = _mm_sha256msg2_epu32(m[(i + 1) & 3], m[i & 3]);
            }
            msg = _mm_shuffle_epi32(msg, 0x0E);
            state0 = _mm_sha256rnds2_epu32(state0, state1, msg);
            if (i >= 1 && i <= 12) m[(i - 1) & 3] = _mm_sha256msg1_epu32(m[(i - 1) & 3], m[i & 3]);
        }
        state0 = _mm_add_epi32(state0, abef_save);
        state1 = _mm_add_epi32(state1, cdgh_save);
    }

    tmp = _mm_shuffle_epi32(state0, 0x1B);             /* FEBA */
    state1 = _mm_shuffle_epi32(state1, 0xB1);          /* DCHG */
    state0 = _mm_blend_epi16(tmp, state1, 0xF0);       /* DCBA */
    state1 = _mm_alignr_epi8(state1, tmp, 8);          /* ABEF */
    _mm_storeu_si128((__m128i *)&state[0], state0);
    _mm_storeu_si128((__m128i *)&state[4], state1);
}
#endif

static inline void sha256_blocks(uint32_t state[8], const uint8_t *p, size_t blocks) {
#if JN_X86
    if (jn_features_enabled & JN_ACCEL_SHA) {
        sha256_blocks_shani(state, p, blocks);
        return;
    }
#endif
    sha256_blocks_portable(state, p, blocks);
}

typedef struct sha256_ctx {
    uint32_t state[8];
    uint8_t buffer[64];
    uint64_t buffered;  /* bytes in buffer, < 64 */
    uint64_t total;     /* bytes hashed so far */
} sha256_ctx;

static inline void sha256_init(sha256_ctx *ctx) {
    memcpy(ctx->state, SHA256_INIT, sizeof SHA256_INIT);
    ctx->buffered = 0;
    ctx->total = 0;
}

static void sha256_update(sha256_ctx *ctx, const uint8_t *p, size_t n) {
    ctx->total += n;
    if (ctx->buffered > 0) {
        size_t take = 64 - ctx->buffered;
        if (take > n) take = n;
        memcpy(ctx->buffer + ctx->buffered, p, take);
        ctx->buffered += take;
        p += take;
        n -= take;
        if (ctx->buffered < 64) return;
        sha256_blocks(ctx->state, ctx->buffer, 1);
        ctx->buffered = 0;
    }
    size_t blocks = n / 64;
    if (blocks > 0) sha256_blocks(ctx->state, p, blocks);
    p += blocks * 64;
    n -= blocks * 64;
    JN_ASSERT(n < 64);
    memcpy(ctx->buffer, p, n);
    ctx->buffered = n;
}

static void sha256_final(sha256_ctx *ctx, uint8_t digest[32]) {
    uint64_t bits = ctx->total * 8;
    uint8_t *b = ctx->buffer;
    JN_ASSERT(ctx->buffered < 64);
    b[ctx->buffered++] = 0x80;
    if (ctx->buffered > 56) {
        memset(b + ctx->buffered, 0, 64 - ctx->buffered);
        sha256_blocks(ctx->state, b, 1);
        ctx->buffered = 0;
    }
    memset(b + ctx->buffered, 0, 56 - ctx->buffered);
    for (int i = 0; i < 8; i++) b[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_blocks(ctx->state, b, 1);
    for (int i = 0; i < 8; i++) {
        digest[4 * i + 0] = (uint8_t)(ctx->state[i] >> 24);
        digest[4 * i + 1] = (uint8_t)(ctx->state[i] >> 16);
        digest[4 * i + 2] = (uint8_t)(ctx->state[i] >> 8);
        digest[4 * i + 3] = (uint8_t)(ctx->state[i]);
    }
}

void jn_sha256(const char *data, size_t length, char *digest_out) {
    sha256_ctx ctx;
    sha256_init(&ctx);
    sha256_update(&ctx, (const uint8_t *)data, length);
    sha256_final(&ctx, (uint8_t *)digest_out);
}

static inline void chain_hash(const uint8_t *prev, const uint8_t *canonical, size_t length,
                              uint8_t *digest) {
    sha256_ctx ctx;
    sha256_init(&ctx);
    sha256_update(&ctx, prev, JN_HASH_SIZE);
    sha256_update(&ctx, canonical, length);
    sha256_final(&ctx, digest);
}

void jn_chain_hash(const char *prev_hash, const char *canonical, size_t length, char *digest_out) {
    chain_hash((const uint8_t *)prev_hash, (const uint8_t *)canonical, length,
               (uint8_t *)digest_out);
}

/* ------------------------------------------------------------------------- */
/* CPU dispatch                                                               */
/* ------------------------------------------------------------------------- */

__attribute__((constructor)) static void jn_init(void) {
    crc32c_table_init();
    int features = 0;
#if JN_X86
    unsigned int eax, ebx, ecx, edx;
    if (__get_cpuid(1, &eax, &ebx, &ecx, &edx)) {
        int sse42 = (ecx >> 20) & 1, sse41 = (ecx >> 19) & 1, ssse3 = (ecx >> 9) & 1;
        if (sse42) features |= JN_ACCEL_CRC;
        if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
            int sha = (ebx >> 29) & 1;
            if (sha && sse41 && ssse3) features |= JN_ACCEL_SHA;
        }
    }
#endif
    jn_features_detected = features;
    jn_features_enabled = features;
}

int jn_cpu_features(void) { return jn_features_enabled; }

void jn_set_accel(int mask) { jn_features_enabled = jn_features_detected & mask; }

/* ------------------------------------------------------------------------- */
/* Segment files                                                              */
/* ------------------------------------------------------------------------- */

static inline uint64_t record_size(uint32_t body_len) {
    return ((uint64_t)JN_RECORD_HEADER_SIZE + body_len + 7u) & ~(uint64_t)7u;
}

static inline jn_segment_header *header_of(uint8_t *base) { return (jn_segment_header *)base; }

static uint64_t page_size(void) {
    long size = sysconf(_SC_PAGESIZE);
    return size > 0 ? (uint64_t)size : 4096u;
}

static int all_zero(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (p[i] != 0) return 0;
    }
    return 1;
}

/* Segment allocation: see jn_file_allocate in journal_core.h for why zeros
 * are written. The zero source is static (the allocator never mallocs) and
 * each chunk's write-back is started as soon as it is written and waited for
 * one chunk later (sync_file_range), so a new segment reaches the disk as a
 * stream of JN_ZERO_CHUNK writes behind the writer's group commits instead of
 * one 64 MiB burst that every msync of the live segment would queue behind. */
#define JN_ZERO_CHUNK (1u << 20)
static const uint8_t jn_zeros[JN_ZERO_CHUNK];
static int jn_allocation_mode = JN_ALLOCATE_ZERO;

void jn_set_allocation(int mode) {
    JN_ASSERT(mode == JN_ALLOCATE_ZERO || mode == JN_ALLOCATE_FALLOCATE);
    __atomic_store_n(&jn_allocation_mode, mode, __ATOMIC_RELAXED);
}

int jn_allocation(void) { return __atomic_load_n(&jn_allocation_mode, __ATOMIC_RELAXED); }

static int write_zeros(int fd, uint64_t size) {
    uint64_t chunks = (size + JN_ZERO_CHUNK - 1) / JN_ZERO_CHUNK;
    uint64_t offset = 0;
    for (uint64_t chunk = 0; chunk < chunks; chunk++) {
        uint64_t length = size - offset < JN_ZERO_CHUNK ? size - offset : JN_ZERO_CHUNK;
        uint64_t done = 0;
        /* Bounded: each pass writes at least one byte or returns. */
        for (uint64_t pass = 0; done < length && pass < length; pass++) {
            ssize_t written = pwrite(fd, jn_zeros + done, (size_t)(length - done), (off_t)(offset + done));
            if (written < 0 && errno == EINTR) continue;
            if (written < 0) return errno;
            if (written == 0) return EIO;
            done += (uint64_t)written;
        }
        JN_ASSERT(done == length);
        /* Start write-back of this chunk; wait for the previous one. Advisory:
         * an error here shows up again, and is returned, at the fdatasync. */
        (void)sync_file_range(fd, (off_t)offset, (off_t)length, SYNC_FILE_RANGE_WRITE);
        if (offset >= JN_ZERO_CHUNK) {
            (void)sync_file_range(fd, (off_t)(offset - JN_ZERO_CHUNK), JN_ZERO_CHUNK,
                                  SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                  SYNC_FILE_RANGE_WAIT_AFTER);
        }
        offset += length;
    }
    JN_ASSERT(offset == size);
    /* One metadata commit for the whole file (size, written extents). */
    if (fdatasync(fd) != 0) return errno;
    /* Drop the (clean) zero pages from the page cache. Written here, they sit
     * in large folios, and dirty state is kept per folio: a group commit that
     * changed 300 bytes would then write back a whole folio (measured: ~3x
     * the sync latency). Faulted in again through the mapping, they come
     * back as small folios. Advisory: a failure only costs that speed. */
    (void)posix_fadvise(fd, 0, (off_t)size, POSIX_FADV_DONTNEED);
    return 0;
}

int jn_file_allocate(int fd, uint64_t size) {
    JN_ASSERT(fd >= 0);
    JN_ASSERT(size >= JN_SEGMENT_MIN);
    int error = posix_fallocate(fd, 0, (off_t)size);
    if (error != 0) return error;
    if (jn_allocation() == JN_ALLOCATE_FALLOCATE) return 0;
    return write_zeros(fd, size);
}

uint8_t *jn_map(int fd, uint64_t size, int writable, int *error_out) {
    JN_ASSERT(fd >= 0);
    JN_ASSERT(size >= JN_SEGMENT_HEADER_SIZE);
    int protection = writable ? (PROT_READ | PROT_WRITE) : PROT_READ;
    void *base = mmap(NULL, (size_t)size, protection, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        *error_out = errno;
        return NULL;
    }
    *error_out = 0;
    return (uint8_t *)base;
}

int jn_unmap(uint8_t *base, uint64_t size) {
    JN_ASSERT(base != NULL);
    return munmap(base, (size_t)size) == 0 ? 0 : errno;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Pre-fault in chunks: one madvise over a whole 64 MiB segment holds the
 * process's mmap lock for its full duration (tens of ms on a fallocated file),
 * and the writer's own faults, msync and any mmap/munmap in the process queue
 * behind it: the group commit stalled for that long right after each rotation. */
#define JN_PREFAULT_CHUNK (2u << 20)

int jn_prefault(uint8_t *base, uint64_t size) {
    JN_ASSERT(base != NULL);
    JN_ASSERT(size % 8 == 0);
    uint64_t offset = 0;
    while (offset < size) {  /* bounded: offset grows by a chunk per pass */
        uint64_t length = size - offset < JN_PREFAULT_CHUNK ? size - offset : JN_PREFAULT_CHUNK;
        if (madvise(base + offset, (size_t)length, MADV_POPULATE_WRITE) != 0) break;
        offset += length;
    }
    if (offset == size) return 0;
    if (errno != EINVAL) return errno;
    /* Kernels before 5.14: an atomic add of zero is a store that changes
     * nothing, so it is safe on a page a reader may already be looking at. */
    uint64_t step = page_size();
    for (uint64_t off = 0; off < size; off += step) {
        __atomic_fetch_add(base + off, (uint8_t)0, __ATOMIC_RELAXED);
    }
    return 0;
}

static int node_id_valid(const uint8_t *node_id, uint8_t length) {
    if (length == 0 || length > JN_NODE_ID_MAX) return 0;
    for (uint8_t i = 0; i < length; i++) {
        uint8_t c = node_id[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == '-';
        if (!ok) return 0;
    }
    return 1;
}

int jn_segment_init(uint8_t *base, uint64_t size, uint64_t first_seq, uint64_t created_unix_ns,
                    uint16_t stream_id, const char *node_id, uint8_t node_id_len,
                    const char *epoch, const char *prev_hash) {
    if (base == NULL || size < JN_SEGMENT_MIN || size % 8 != 0) return JN_E_ARGUMENT;
    if (first_seq == 0 || stream_id > 1023) return JN_E_ARGUMENT;
    if (!node_id_valid((const uint8_t *)node_id, node_id_len)) return JN_E_ARGUMENT;
    if (!all_zero(base, JN_SEGMENT_HEADER_SIZE + JN_RECORD_HEADER_SIZE)) return JN_E_ARGUMENT;
    jn_segment_header *h = header_of(base);
    memcpy(h->magic, JN_MAGIC, 8);
    h->version = JN_VERSION;
    h->header_size = JN_SEGMENT_HEADER_SIZE;
    h->segment_size = size;
    h->first_seq = first_seq;
    h->created_unix_ns = created_unix_ns;
    h->stream_id = stream_id;
    h->node_id_len = node_id_len;
    memcpy(h->node_id, node_id, node_id_len);
    memcpy(h->epoch, epoch, JN_EPOCH_SIZE);
    memcpy(h->prev_hash, prev_hash, JN_HASH_SIZE);
    h->header_crc = crc32c(base, offsetof(jn_segment_header, header_crc));
    h->write_end = JN_SEGMENT_HEADER_SIZE;
    h->write_seq = first_seq - 1;
    h->synced_end = JN_SEGMENT_HEADER_SIZE;
    h->flags = 0;
    JN_ASSERT(jn_segment_check(base, JN_SEGMENT_HEADER_SIZE, size) == JN_OK);
    return JN_OK;
}

int jn_segment_check(const uint8_t *base, uint64_t length, uint64_t file_size) {
    JN_ASSERT(base != NULL);
    if (length < JN_SEGMENT_HEADER_SIZE) return JN_H_SIZE;
    const jn_segment_header *h = (const jn_segment_header *)base;
    if (memcmp(h->magic, JN_MAGIC, 8) != 0) return JN_H_MAGIC;
    if (h->version != JN_VERSION) return JN_H_VERSION;
    if (h->header_size != JN_SEGMENT_HEADER_SIZE) return JN_H_SIZE;
    if (h->segment_size != file_size || file_size < JN_SEGMENT_MIN || file_size % 8 != 0) {
        return JN_H_SIZE;
    }
    if (crc32c(base, offsetof(jn_segment_header, header_crc)) != h->header_crc) return JN_H_CRC;
    if (h->first_seq == 0 || h->stream_id > 1023) return JN_H_FIELD;
    if (!node_id_valid(h->node_id, h->node_id_len)) return JN_H_FIELD;
    if (!all_zero(h->node_id + h->node_id_len, sizeof h->node_id - h->node_id_len)) return JN_H_FIELD;
    if (!all_zero(h->reserved0, sizeof h->reserved0) || h->reserved1 != 0) return JN_H_FIELD;
    if (!all_zero(h->reserved2, sizeof h->reserved2)) return JN_H_FIELD;
    if ((h->flags & ~(uint32_t)JN_FLAG_SEALED) != 0) return JN_H_FIELD;
    uint64_t write_end = __atomic_load_n(&h->write_end, __ATOMIC_ACQUIRE);
    if (write_end < JN_SEGMENT_HEADER_SIZE || write_end > file_size || write_end % 8 != 0) {
        return JN_H_FIELD;
    }
    return JN_OK;
}

void jn_segment_seal(uint8_t *base) {
    JN_ASSERT(base != NULL);
    JN_ASSERT(memcmp(header_of(base)->magic, JN_MAGIC, 8) == 0);
    __atomic_or_fetch(&header_of(base)->flags, (uint32_t)JN_FLAG_SEALED, __ATOMIC_RELEASE);
}

int jn_segment_zero(uint8_t *base, uint64_t size, uint64_t from, uint64_t to,
                    uint64_t write_seq) {
    if (base == NULL || from < JN_SEGMENT_HEADER_SIZE || from % 8 != 0) return JN_E_ARGUMENT;
    if (to < from || to > size) return JN_E_ARGUMENT;
    jn_segment_header *h = header_of(base);
    JN_ASSERT(h->segment_size == size);
    memset(base + from, 0, (size_t)(to - from));
    __atomic_store_n(&h->write_end, from, __ATOMIC_RELEASE);
    __atomic_store_n(&h->write_seq, write_seq, __ATOMIC_RELEASE);
    if (__atomic_load_n(&h->synced_end, __ATOMIC_ACQUIRE) > from) {
        __atomic_store_n(&h->synced_end, from, __ATOMIC_RELEASE);
    }
    JN_ASSERT(all_zero(base + from, (size_t)(to - from)));
    return JN_OK;
}

int jn_msync(uint8_t *base, uint64_t size, uint64_t from, uint64_t to) {
    JN_ASSERT(base != NULL);
    JN_ASSERT(from <= to && to <= size);
    uint64_t page = page_size();
    uint64_t start = from & ~(page - 1);
    uint64_t end = (to + page - 1) & ~(page - 1);
    if (end > size) end = size;
    if (end <= start) return 0;
    return msync(base + start, (size_t)(end - start), MS_SYNC) == 0 ? 0 : errno;
}

int jn_sync(uint8_t *base, uint64_t size, jn_sync_result *out) {
    JN_ASSERT(base != NULL);
    jn_segment_header *h = header_of(base);
    /* write_seq before write_end: the writer stores them in the opposite
     * order, so the end read here covers at least record `seq`. */
    uint64_t seq = __atomic_load_n(&h->write_seq, __ATOMIC_ACQUIRE);
    uint64_t end = __atomic_load_n(&h->write_end, __ATOMIC_ACQUIRE);
    JN_ASSERT(end >= JN_SEGMENT_HEADER_SIZE && end <= size);
    JN_ASSERT(end % 8 == 0);
    /* One msync from offset 0 writes the header page (with the synced_end of
     * the previous sync) and every dirty data page up to `end` together: only
     * dirty pages cost anything, and one call means one journal commit. */
    int error = jn_msync(base, size, 0, end);
    if (error != 0) return -error;
    if (__atomic_load_n(&h->synced_end, __ATOMIC_ACQUIRE) < end) {
        __atomic_store_n(&h->synced_end, end, __ATOMIC_RELEASE);
    }
    out->seq = seq;
    out->end = end;
    return 0;
}

uint64_t jn_load_write_end(const uint8_t *base) {
    JN_ASSERT(base != NULL);
    return __atomic_load_n(&((const jn_segment_header *)base)->write_end, __ATOMIC_ACQUIRE);
}

/* ------------------------------------------------------------------------- */
/* Records                                                                    */
/* ------------------------------------------------------------------------- */

/* The F7 rules once a record's length is known to fit: CRC, seq, type, flags,
 * padding, and the chain when prev_hash is given; fills *out. `rec` holds the
 * record (the mapping or a private copy); crc and body_len are the values the
 * caller read once, so every decision is about the bytes the CRC covers. */
static int check_record(const uint8_t *rec, uint64_t pos, uint32_t crc, uint32_t body_len,
                        uint64_t expected_seq, const uint8_t *prev_hash, jn_record_view *out) {
    const jn_record_header *r = (const jn_record_header *)rec;
    uint64_t total = record_size(body_len);
    if (crc32c(rec + 4, (size_t)(total - 4)) != crc) return JN_R_CRC;
    if (r->seq != expected_seq) return JN_R_SEQ;
    if (r->type < JN_TYPE_GENESIS || r->type > JN_TYPE_MAX) return JN_R_TYPE;
    if ((r->type == JN_TYPE_GENESIS) != (r->seq == 1)) return JN_R_TYPE;
    if (r->flags != 0 || r->reserved != 0) return JN_R_RESERVED;
    if (!all_zero(rec + JN_RECORD_HEADER_SIZE + body_len,
                  (size_t)(total - JN_RECORD_HEADER_SIZE - body_len))) {
        return JN_R_RESERVED;
    }
    if (prev_hash != NULL) {
        uint8_t digest[JN_HASH_SIZE];
        chain_hash(prev_hash, rec + JN_CANONICAL_OFFSET,
                   JN_RECORD_HEADER_SIZE - JN_CANONICAL_OFFSET + body_len, digest);
        if (memcmp(digest, r->chain_hash, JN_HASH_SIZE) != 0) return JN_R_CHAIN;
    }
    out->pos = pos;
    out->record_size = total;
    out->seq = r->seq;
    out->attestation_id = r->attestation_id;
    out->body_len = body_len;
    out->type = r->type;
    out->reserved = 0;
    return JN_OK;
}

int jn_record_check(const uint8_t *base, uint64_t size, uint64_t pos, uint64_t expected_seq,
                    const char *prev_hash, jn_record_view *out) {
    JN_ASSERT(base != NULL);
    if (pos % 8 != 0 || pos < JN_SEGMENT_HEADER_SIZE || pos > size) return JN_R_ALIGN;
    if (size - pos < JN_RECORD_HEADER_SIZE) return JN_R_END;
    const uint8_t *p = base + pos;
    if (all_zero(p, JN_RECORD_HEADER_SIZE)) return JN_R_END;
    const jn_record_header *r = (const jn_record_header *)p;
    /* Read each field once: a follower may race a writer, and every decision
     * below must be about the same bytes the CRC then covers. */
    uint32_t stored_crc = __atomic_load_n(&r->crc, __ATOMIC_ACQUIRE);
    uint32_t body_len = r->body_len;
    if (body_len > JN_BODY_MAX) return JN_R_LENGTH;
    if (record_size(body_len) > size - pos) return JN_R_LENGTH;
    return check_record(p, pos, stored_crc, body_len, expected_seq, (const uint8_t *)prev_hash, out);
}

/* A later record that passes its CRC and has a higher seq (F10): evidence
 * that the bad record is not a torn tail but damage in the middle. */
static uint64_t find_valid_after(const uint8_t *base, uint64_t size, uint64_t from, uint64_t to,
                                 uint64_t bad_seq) {
    uint64_t limit = (size - JN_SEGMENT_HEADER_SIZE) / 8;
    uint64_t steps = 0;
    for (uint64_t q = from; q + JN_RECORD_HEADER_SIZE <= size && q < to; q += 8) {
        JN_ASSERT(++steps <= limit);
        const jn_record_header *r = (const jn_record_header *)(base + q);
        if (r->seq <= bad_seq || r->seq - bad_seq > size / JN_RECORD_HEADER_SIZE) continue;
        if (r->body_len > JN_BODY_MAX || record_size(r->body_len) > size - q) continue;
        uint64_t total = record_size(r->body_len);
        if (crc32c(base + q + 4, (size_t)(total - 4)) == r->crc) return q;
    }
    return 0;
}

int jn_scan(const uint8_t *base, uint64_t size, uint64_t pos, uint64_t expected_seq,
            const char *prev_hash, jn_scan_result *out) {
    JN_ASSERT(base != NULL);
    JN_ASSERT(prev_hash != NULL);
    memset(out, 0, sizeof *out);
    out->next_seq = expected_seq;
    memcpy(out->last_hash, prev_hash, JN_HASH_SIZE);
    uint64_t limit = size / JN_RECORD_HEADER_SIZE + 1;
    int rc = JN_R_END;
    for (uint64_t i = 0; i < limit; i++) {
        jn_record_view view;
        rc = jn_record_check(base, size, pos, out->next_seq, (const char *)out->last_hash, &view);
        if (rc != JN_OK) break;
        JN_ASSERT(view.pos == pos && view.seq == out->next_seq);
        memcpy(out->last_hash, ((const jn_record_header *)(base + pos))->chain_hash, JN_HASH_SIZE);
        pos += view.record_size;
        out->next_seq += 1;
        out->count += 1;
        JN_ASSERT(pos <= size);
    }
    JN_ASSERT(rc != JN_OK);
    out->end = pos;
    /* Everything after the last valid record must be zero (F8); find where
     * the nonzero bytes end, scanning back from the end of the segment. */
    uint64_t nonzero_end = size;
    while (nonzero_end > pos && (nonzero_end - pos) >= 8 &&
           *(const uint64_t *)(base + nonzero_end - 8) == 0) {
        nonzero_end -= 8;
    }
    while (nonzero_end > pos && base[nonzero_end - 1] == 0) nonzero_end -= 1;
    out->nonzero_end = nonzero_end;
    if (nonzero_end == pos) {
        out->status = JN_SCAN_CLEAN;
        out->reason = JN_OK;
        return JN_OK;
    }
    out->status = JN_SCAN_INVALID;
    out->reason = (rc == JN_R_END) ? JN_R_GARBAGE : rc;
    out->valid_after_pos = find_valid_after(base, size, pos + 8, nonzero_end, out->next_seq);
    return JN_OK;
}

/* Batch reads (jn_read_batch). A positive code, never returned to Python:
 * the record at this offset does not fit in what is left of the copy buffer. */
#define JN_BATCH_NO_ROOM 1

/* Copies the record at `pos` of the mapping to `dst` and validates the copy
 * (F7, the same rules as jn_record_check). Every decision is taken on `dst`,
 * never on the mapping again, so a writer racing us cannot make the bytes
 * handed out differ from the bytes checked. Returns JN_OK with *view filled,
 * JN_R_END, a JN_R_* reason, or JN_BATCH_NO_ROOM (nothing usable copied). */
static int copy_record_checked(const uint8_t *base, uint64_t size, uint64_t pos,
                               uint64_t expected_seq, const uint8_t *prev_hash, uint8_t *dst,
                               uint64_t room, jn_record_view *view) {
    JN_ASSERT(pos % 8 == 0 && pos >= JN_SEGMENT_HEADER_SIZE && pos <= size);
    JN_ASSERT(((uintptr_t)dst) % 8 == 0);
    if (size - pos < JN_RECORD_HEADER_SIZE) return JN_R_END;
    if (room < JN_RECORD_HEADER_SIZE) return JN_BATCH_NO_ROOM;
    const uint8_t *src = base + pos;
    /* The writer stores a record's bytes, then its crc (release): load the
     * crc first (acquire), so the bytes copied after it are at least as new. */
    uint32_t loaded_crc = __atomic_load_n((const uint32_t *)src, __ATOMIC_ACQUIRE);
    memcpy(dst, &loaded_crc, sizeof loaded_crc);
    memcpy(dst + 4, src + 4, JN_RECORD_HEADER_SIZE - 4);
    if (all_zero(dst, JN_RECORD_HEADER_SIZE)) return JN_R_END;
    const jn_record_header *r = (const jn_record_header *)dst;
    uint32_t body_len = r->body_len;
    if (body_len > JN_BODY_MAX) return JN_R_LENGTH;
    uint64_t total = record_size(body_len);
    if (total > size - pos) return JN_R_LENGTH;
    if (total > room) return JN_BATCH_NO_ROOM;
    memcpy(dst + JN_RECORD_HEADER_SIZE, src + JN_RECORD_HEADER_SIZE,
           (size_t)(total - JN_RECORD_HEADER_SIZE));
    /* From here on only the copy is read. */
    return check_record(dst, pos, loaded_crc, body_len, expected_seq, prev_hash, view);
}

int jn_read_batch(const uint8_t *base, uint64_t size, uint64_t pos, uint64_t expected_seq,
                  const char *prev_hash, uint64_t count_max, char *copy_out, uint64_t copy_size,
                  jn_record_view *views_out, jn_batch_result *out) {
    JN_ASSERT(base != NULL && prev_hash != NULL);
    JN_ASSERT(copy_out != NULL && views_out != NULL && out != NULL);
    JN_ASSERT(count_max >= 1);
    JN_ASSERT(copy_size >= record_size(JN_BODY_MAX));  /* every call can take a record */
    JN_ASSERT(pos % 8 == 0 && pos >= JN_SEGMENT_HEADER_SIZE && pos <= size);
    uint8_t *copy = (uint8_t *)copy_out;
    const uint8_t *prev = (const uint8_t *)prev_hash;
    uint64_t copied = 0;
    uint64_t count = 0;
    int stop = JN_OK;
    for (; count < count_max; count++) {  /* bounded by count_max */
        jn_record_view *view = &views_out[count];
        int rc = copy_record_checked(base, size, pos + copied, expected_seq + count, prev,
                                     copy + copied, copy_size - copied, view);
        if (rc == JN_BATCH_NO_ROOM) break;
        if (rc != JN_OK) {
            stop = rc;
            break;
        }
        JN_ASSERT(view->pos == pos + copied && view->seq == expected_seq + count);
        JN_ASSERT(view->record_size <= copy_size - copied);
        prev = copy + copied + 4;  /* the chain hash of this record, in the copy */
        copied += view->record_size;
    }
    JN_ASSERT(count <= count_max && copied <= copy_size && pos + copied <= size);
    JN_ASSERT((count == 0) == (copied == 0));
    out->stop = stop;
    out->reserved = 0;
    out->count = count;
    out->end = pos + copied;
    out->next_seq = expected_seq + count;
    out->copied = copied;
    memcpy(out->last_hash, prev, JN_HASH_SIZE);
    return JN_OK;
}

/* ------------------------------------------------------------------------- */
/* Merkle tree (RFC 9162)                                                     */
/* ------------------------------------------------------------------------- */

static inline void merkle_leaf(const uint8_t *data, size_t length, uint8_t digest[32]) {
    static const uint8_t leaf_prefix = 0x00;
    sha256_ctx ctx;
    sha256_init(&ctx);
    sha256_update(&ctx, &leaf_prefix, 1);
    sha256_update(&ctx, data, length);
    sha256_final(&ctx, digest);
}

/* digest may alias left or right: both are copied into the block first. */
static inline void merkle_node(const uint8_t *left, const uint8_t *right, uint8_t digest[32]) {
    uint8_t block[1 + 2 * JN_HASH_SIZE];
    block[0] = 0x01;
    memcpy(block + 1, left, JN_HASH_SIZE);
    memcpy(block + 1 + JN_HASH_SIZE, right, JN_HASH_SIZE);
    sha256_ctx ctx;
    sha256_init(&ctx);
    sha256_update(&ctx, block, sizeof block);
    sha256_final(&ctx, digest);
}

void jn_merkle_leaf(const char *data, size_t length, char *digest_out) {
    merkle_leaf((const uint8_t *)data, length, (uint8_t *)digest_out);
}

void jn_merkle_node(const char *left, const char *right, char *digest_out) {
    merkle_node((const uint8_t *)left, (const uint8_t *)right, (uint8_t *)digest_out);
}

/* Append one leaf hash to the compact range: merge with every complete
 * subtree of equal size (one per trailing set bit of tree_size). */
static inline void tree_push(jn_writer *w, const uint8_t leaf[32]) {
    uint8_t h[JN_HASH_SIZE];
    memcpy(h, leaf, JN_HASH_SIZE);
    uint64_t size = w->tree_size;
    JN_ASSERT(w->tree_count == (uint32_t)__builtin_popcountll(size));
    while (size & 1) {
        JN_ASSERT(w->tree_count > 0);
        w->tree_count--;
        merkle_node(w->tree[w->tree_count], h, h);
        size >>= 1;
    }
    JN_ASSERT(w->tree_count < 64);
    memcpy(w->tree[w->tree_count], h, JN_HASH_SIZE);
    w->tree_count++;
    w->tree_size++;
}

int jn_tree_reset(jn_writer *w, uint64_t size, const char *hashes, uint32_t count) {
    JN_ASSERT(w != NULL);
    if (count > 64 || count != (uint32_t)__builtin_popcountll(size)) return JN_E_ARGUMENT;
    if (w->next_seq == 0 || size > w->next_seq - 1) return JN_E_ARGUMENT;
    if (count > 0) memcpy(w->tree, hashes, (size_t)count * JN_HASH_SIZE);
    w->tree_size = size;
    w->tree_count = count;
    w->tree_enabled = 0;  /* on again (jn_tree_enable) once the leaves up to next_seq - 1 are in */
    return JN_OK;
}

int64_t jn_tree_add_records(jn_writer *w, const uint8_t *base, uint64_t size, uint64_t pos, uint64_t end) {
    JN_ASSERT(w != NULL);
    if (base == NULL || pos < JN_SEGMENT_HEADER_SIZE || end > size || pos > end || pos % 8 != 0) {
        return JN_E_ARGUMENT;
    }
    int64_t added = 0;
    while (pos < end) {
        if (end - pos < JN_RECORD_HEADER_SIZE) return JN_E_ARGUMENT;
        const jn_record_header *r = (const jn_record_header *)(base + pos);
        uint64_t total = record_size(r->body_len);
        if (r->body_len > JN_BODY_MAX || total > end - pos || r->seq != w->tree_size + 1) return JN_E_ARGUMENT;
        uint8_t leaf[JN_HASH_SIZE];
        merkle_leaf(base + pos + JN_CANONICAL_OFFSET, JN_RECORD_HEADER_SIZE - JN_CANONICAL_OFFSET + r->body_len, leaf);
        tree_push(w, leaf);
        pos += total;
        added++;
    }
    return added;
}

void jn_tree_push_canonical(jn_writer *w, const char *canonical, size_t length) {
    JN_ASSERT(w != NULL && !w->tree_enabled);  /* resume only: appends push their own leaves */
    uint8_t leaf[JN_HASH_SIZE];
    merkle_leaf((const uint8_t *)canonical, length, leaf);
    tree_push(w, leaf);
}

int jn_tree_enable(jn_writer *w) {
    JN_ASSERT(w != NULL);
    if (w->tree_size != w->next_seq - 1) return JN_E_ARGUMENT;
    w->tree_enabled = 1;
    return JN_OK;
}

void jn_tree_root(const jn_writer *w, char *root_out) {
    JN_ASSERT(w != NULL && w->tree_count <= 64);
    uint8_t *out = (uint8_t *)root_out;
    if (w->tree_count == 0) {
        sha256_ctx ctx;
        sha256_init(&ctx);
        sha256_final(&ctx, out);    /* MTH of the empty tree: SHA-256("") */
        return;
    }
    uint8_t h[JN_HASH_SIZE];
    memcpy(h, w->tree[w->tree_count - 1], JN_HASH_SIZE);
    for (uint32_t i = w->tree_count - 1; i > 0; i--) merkle_node(w->tree[i - 1], h, h);
    memcpy(out, h, JN_HASH_SIZE);
}

/* ------------------------------------------------------------------------- */
/* Appending                                                                  */
/* ------------------------------------------------------------------------- */

int jn_writer_attach(jn_writer *w, uint8_t *base, uint64_t size, uint64_t pos,
                     uint64_t next_seq, const char *last_hash) {
    JN_ASSERT(w != NULL);
    if (base == NULL || jn_segment_check(base, size, size) != JN_OK) return JN_E_ARGUMENT;
    if (pos < JN_SEGMENT_HEADER_SIZE || pos > size || pos % 8 != 0 || next_seq == 0) {
        return JN_E_ARGUMENT;
    }
    w->base = base;
    w->size = size;
    w->pos = pos;
    w->next_seq = next_seq;
    memcpy(w->last_hash, last_hash, JN_HASH_SIZE);
    w->failed = 0;
    /* w->flusher is left as it is: rotation re-attaches under the flusher lock. */
    return JN_OK;
}

static void flusher_poke(jn_flusher *f, uint64_t seq);

static inline void publish(jn_writer *w, uint64_t seq) {
    jn_segment_header *h = header_of(w->base);
    /* write_end before write_seq: see jn_sync. */
    __atomic_store_n(&h->write_end, w->pos, __ATOMIC_RELEASE);
    __atomic_store_n(&h->write_seq, seq, __ATOMIC_RELEASE);
    if (w->flusher != NULL) flusher_poke(w->flusher, seq);
}

static inline int64_t append_one(jn_writer *w, uint16_t type, uint64_t attestation_id,
                                 const uint8_t *body, uint32_t body_len) {
    uint64_t total = record_size(body_len);
    if (total > w->size - w->pos) return JN_E_SEGMENT_FULL;
    JN_ASSERT(w->pos % 8 == 0);
    JN_ASSERT(w->pos >= JN_SEGMENT_HEADER_SIZE && w->pos + total <= w->size);
    uint8_t *p = w->base + w->pos;
    jn_record_header *r = (jn_record_header *)p;
    /* Records only ever go into zeroed space (preallocated, or a zeroed torn tail). */
    JN_ASSERT(r->crc == 0 && r->seq == 0);
    r->body_len = body_len;
    r->seq = w->next_seq;
    r->attestation_id = attestation_id;
    r->type = type;
    r->flags = 0;
    r->reserved = 0;
    memcpy(p + JN_RECORD_HEADER_SIZE, body, body_len);
    memset(p + JN_RECORD_HEADER_SIZE + body_len, 0, total - JN_RECORD_HEADER_SIZE - body_len);
    chain_hash(w->last_hash, p + JN_CANONICAL_OFFSET,
               JN_RECORD_HEADER_SIZE - JN_CANONICAL_OFFSET + body_len, r->chain_hash);
    uint32_t crc = crc32c(p + 4, (size_t)(total - 4));
    __atomic_store_n(&r->crc, crc, __ATOMIC_RELEASE);
    memcpy(w->last_hash, r->chain_hash, JN_HASH_SIZE);
    if (w->tree_enabled) {
        uint8_t leaf[JN_HASH_SIZE];
        merkle_leaf(p + JN_CANONICAL_OFFSET, JN_RECORD_HEADER_SIZE - JN_CANONICAL_OFFSET + body_len, leaf);
        JN_ASSERT(w->tree_size == w->next_seq - 1);
        tree_push(w, leaf);
    }
    w->pos += total;
    uint64_t seq = w->next_seq;
    /* Atomic because the flusher thread reads it to see what is pending. */
    __atomic_store_n(&w->next_seq, seq + 1, __ATOMIC_RELEASE);
    return (int64_t)seq;
}

static inline int writer_usable(const jn_writer *w) {
    if (w->base == NULL) return JN_E_CLOSED;
    if (__atomic_load_n(&w->failed, __ATOMIC_RELAXED)) return JN_E_FAILED;
    return JN_OK;
}

int64_t jn_append(jn_writer *w, uint16_t type, uint64_t attestation_id, const char *body,
                  uint32_t body_len, char *hash_out) {
    int usable = writer_usable(w);
    if (usable != JN_OK) return usable;
    if (type <= JN_TYPE_GENESIS || type > JN_TYPE_MAX || body_len > JN_BODY_MAX) {
        return JN_E_ARGUMENT;
    }
    int64_t seq = append_one(w, type, attestation_id, (const uint8_t *)body, body_len);
    if (seq < 0) return seq;
    publish(w, (uint64_t)seq);
    if (hash_out != NULL) memcpy(hash_out, w->last_hash, JN_HASH_SIZE);
    return seq;
}

int64_t jn_append_genesis(jn_writer *w, const char *body, uint32_t body_len) {
    int usable = writer_usable(w);
    if (usable != JN_OK) return usable;
    if (w->next_seq != 1 || body_len > JN_BODY_MAX) return JN_E_ARGUMENT;
    int64_t seq = append_one(w, JN_TYPE_GENESIS, 0, (const uint8_t *)body, body_len);
    if (seq < 0) return seq;
    publish(w, (uint64_t)seq);
    return seq;
}

int64_t jn_append_many(jn_writer *w, uint32_t count, const uint16_t *types,
                       const uint64_t *attestation_ids, const char *bodies,
                       const uint32_t *lengths, char *hash_out) {
    int usable = writer_usable(w);
    if (usable != JN_OK) return usable;
    /* Check every argument before the first store: a refused batch leaves no trace. */
    for (uint32_t i = 0; i < count; i++) {
        if (types[i] <= JN_TYPE_GENESIS || types[i] > JN_TYPE_MAX) return JN_E_ARGUMENT;
        if (lengths[i] > JN_BODY_MAX) return JN_E_ARGUMENT;
    }
    const uint8_t *body = (const uint8_t *)bodies;
    uint32_t appended = 0;
    int64_t last = 0;
    for (; appended < count; appended++) {
        int64_t seq = append_one(w, types[appended], attestation_ids[appended], body,
                                 lengths[appended]);
        if (seq < 0) break;
        last = seq;
        body += lengths[appended];
    }
    if (appended > 0) {
        publish(w, (uint64_t)last);
        if (hash_out != NULL) memcpy(hash_out, w->last_hash, JN_HASH_SIZE);
    }
    return appended;
}

/* ------------------------------------------------------------------------- */
/* Group commit                                                               */
/* ------------------------------------------------------------------------- */

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t jn_now_ns(void) { return now_ns(); }

#define JN_FLUSHER_IDLE_NS 100000000u  /* an idle flusher re-checks every 100 ms */
/* Records nobody waits for (jn_flusher_want) are synced within this bound. */
#define JN_FLUSHER_LAZY_NS 5000000u

/* What the flusher is sleeping on (f->idle): */
#define JN_AWAKE 0
#define JN_IDLE_EMPTY 1  /* nothing unsynced: any append wakes it (to start the lazy bound) */
#define JN_IDLE_LAZY 2   /* unsynced records nobody waits for: a want or flush_records wakes it */

struct jn_flusher {
    jn_writer *writer;
    pthread_t thread;
    pthread_mutex_t mutex;   /* held while syncing; rotation holds it to swap segments */
    int wake_fd;             /* eventfd: an append pokes it when the flusher is idle */
    int notify_fd;           /* eventfd read by the asyncio loop; not owned */
    uint64_t interval_ns;
    uint64_t flush_records;
    uint64_t durable_seq;    /* atomic; written under mutex */
    uint64_t wanted_seq;     /* atomic; highest seq a waiter needs durable */
    uint64_t syncs;          /* atomic */
    int32_t idle;            /* atomic; JN_AWAKE, JN_IDLE_EMPTY or JN_IDLE_LAZY */
    int32_t stop;            /* atomic */
    int32_t error;           /* atomic errno of a failed sync */
    int32_t want_notify;     /* atomic */
    uint64_t *log;           /* benchmark log of (seq, ns) pairs, or NULL */
    uint64_t log_capacity;
    uint64_t log_length;     /* atomic */
};

static void eventfd_signal(int fd) {
    uint64_t one = 1;
    /* EAGAIN means the counter is already nonzero: the reader will wake anyway. */
    ssize_t written = write(fd, &one, sizeof one);
    (void)written;
}

static void eventfd_drain(int fd) {
    uint64_t value;
    ssize_t got = read(fd, &value, sizeof value);  /* nonblocking; EAGAIN when empty */
    (void)got;
}

static void eventfd_wait(int fd, uint64_t timeout_ns) {
    struct pollfd entry = {.fd = fd, .events = POLLIN, .revents = 0};
    struct timespec timeout = {.tv_sec = (time_t)(timeout_ns / 1000000000u),
                               .tv_nsec = (long)(timeout_ns % 1000000000u)};
    (void)ppoll(&entry, 1, &timeout, NULL);
}

/* Wakes the flusher if it sleeps in one of `states` (a mask of 1 << JN_IDLE_*).
 * Pairs with the flusher's idle store then re-check: either it sees what the
 * caller published before this call, or the caller sees it asleep and wakes
 * it (no lost wake-up). */
static void flusher_wake_if(jn_flusher *f, int states) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    int32_t idle = __atomic_load_n(&f->idle, __ATOMIC_RELAXED);
    if (idle != JN_AWAKE && (states & (1 << idle)) &&
        __atomic_compare_exchange_n(&f->idle, &idle, JN_AWAKE, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
        eventfd_signal(f->wake_fd);
    }
}

/* Called on the append path after publishing. An append alone does not ask
 * for a sync: a record is synced when someone waits for it (jn_flusher_want),
 * when flush_records are pending, or within JN_FLUSHER_LAZY_NS. So a record
 * nobody waits for (a sidecar OUTCOME) does not cost a sync of its own, nor
 * delay the next waited-for record behind that sync. */
static void flusher_poke(jn_flusher *f, uint64_t seq) {
    if (seq - __atomic_load_n(&f->durable_seq, __ATOMIC_RELAXED) == f->flush_records) {
        /* Enough pending: end whatever wait the flusher is in, the interval
         * included (once per crossing, not once per append). */
        eventfd_signal(f->wake_fd);
    } else {
        flusher_wake_if(f, 1 << JN_IDLE_EMPTY);  /* start the lazy bound */
    }
}

static void flusher_sync(jn_flusher *f) {
    jn_writer *w = f->writer;
    jn_sync_result result = {0, 0};
    int rc = 0;
    pthread_mutex_lock(&f->mutex);
    if (w->base != NULL) {
        rc = jn_sync(w->base, w->size, &result);
        if (rc == 0 && result.seq > __atomic_load_n(&f->durable_seq, __ATOMIC_ACQUIRE)) {
            __atomic_store_n(&f->durable_seq, result.seq, __ATOMIC_SEQ_CST);
        }
    }
    pthread_mutex_unlock(&f->mutex);
    if (rc < 0) {
        __atomic_store_n(&f->error, -rc, __ATOMIC_SEQ_CST);
        __atomic_store_n(&w->failed, 1, __ATOMIC_SEQ_CST);
    } else {
        __atomic_add_fetch(&f->syncs, 1, __ATOMIC_RELAXED);
        uint64_t n = __atomic_load_n(&f->log_length, __ATOMIC_RELAXED);
        if (f->log != NULL && n < f->log_capacity) {
            f->log[2 * n] = __atomic_load_n(&f->durable_seq, __ATOMIC_ACQUIRE);
            f->log[2 * n + 1] = now_ns();
            __atomic_store_n(&f->log_length, n + 1, __ATOMIC_RELEASE);
        }
    }
    if (__atomic_load_n(&f->want_notify, __ATOMIC_SEQ_CST)) eventfd_signal(f->notify_fd);
}

/* Sleeps in `state` unless `ready` turns true once the state is published
 * (the wakers' side of flusher_wake_if); returns with the flusher awake. */
static void flusher_sleep(jn_flusher *f, int32_t state, uint64_t timeout_ns, uint64_t durable) {
    jn_writer *w = f->writer;
    __atomic_store_n(&f->idle, state, __ATOMIC_SEQ_CST);
    uint64_t appended = __atomic_load_n(&w->next_seq, __ATOMIC_SEQ_CST) - 1;
    uint64_t wanted = __atomic_load_n(&f->wanted_seq, __ATOMIC_SEQ_CST);
    int ready = (state == JN_IDLE_EMPTY) ? appended > durable
                                         : (wanted > durable || appended - durable >= f->flush_records);
    if (__atomic_load_n(&f->error, __ATOMIC_ACQUIRE) != 0) ready = 0;
    if (!ready && !__atomic_load_n(&f->stop, __ATOMIC_ACQUIRE)) eventfd_wait(f->wake_fd, timeout_ns);
    __atomic_store_n(&f->idle, JN_AWAKE, __ATOMIC_SEQ_CST);
    eventfd_drain(f->wake_fd);
}

static void *flusher_main(void *argument) {
    jn_flusher *f = argument;
    jn_writer *w = f->writer;
    uint64_t last_start = 0;
    int slept = 0;  /* slept since the last sync: the next one is not back to back */
    /* Runs until jn_flusher_stop; every wait below is bounded. */
    while (!__atomic_load_n(&f->stop, __ATOMIC_ACQUIRE)) {
        uint64_t durable = __atomic_load_n(&f->durable_seq, __ATOMIC_ACQUIRE);
        uint64_t appended = __atomic_load_n(&w->next_seq, __ATOMIC_ACQUIRE) - 1;
        uint64_t wanted = __atomic_load_n(&f->wanted_seq, __ATOMIC_ACQUIRE);
        if (appended <= durable || __atomic_load_n(&f->error, __ATOMIC_ACQUIRE) != 0) {
            flusher_sleep(f, JN_IDLE_EMPTY, JN_FLUSHER_IDLE_NS, durable);
            slept = 1;
            continue;
        }
        if (wanted <= durable && appended - durable < f->flush_records) {
            /* Only records nobody waits for: sync when someone does, or at
             * the lazy bound, whichever comes first. */
            flusher_sleep(f, JN_IDLE_LAZY, JN_FLUSHER_LAZY_NS, durable);
            slept = 1;
        }
        uint64_t now = now_ns();
        /* The interval spaces back-to-back syncs under load (fewer, larger
         * group commits); a want that wakes a sleeping flusher is served at
         * once, so a lone request never waits out the interval. */
        if (!slept && f->interval_ns > 0 && appended - durable < f->flush_records &&
            now < last_start + f->interval_ns) {
            eventfd_wait(f->wake_fd, last_start + f->interval_ns - now);
            eventfd_drain(f->wake_fd);
        }
        last_start = now_ns();
        slept = 0;
        flusher_sync(f);
    }
    return NULL;
}

jn_flusher *jn_flusher_start(jn_writer *w, uint64_t interval_ns, uint64_t flush_records,
                             int notify_fd, int *error_out) {
    JN_ASSERT(w != NULL && w->base != NULL);
    JN_ASSERT(w->flusher == NULL && flush_records > 0);
    jn_flusher *f = calloc(1, sizeof *f);
    if (f == NULL) {
        *error_out = ENOMEM;
        return NULL;
    }
    f->writer = w;
    f->notify_fd = notify_fd;
    f->interval_ns = interval_ns;
    f->flush_records = flush_records;
    f->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (f->wake_fd < 0) {
        *error_out = errno;
        free(f);
        return NULL;
    }
    pthread_mutex_init(&f->mutex, NULL);
    w->flusher = f;
    int rc = pthread_create(&f->thread, NULL, flusher_main, f);
    if (rc != 0) {
        w->flusher = NULL;
        pthread_mutex_destroy(&f->mutex);
        close(f->wake_fd);
        free(f);
        *error_out = rc;
        return NULL;
    }
    *error_out = 0;
    return f;
}

void jn_flusher_stop(jn_flusher *f) {
    JN_ASSERT(f != NULL);
    __atomic_store_n(&f->stop, 1, __ATOMIC_SEQ_CST);
    eventfd_signal(f->wake_fd);
    pthread_join(f->thread, NULL);
    JN_ASSERT(f->writer->flusher == f);
    f->writer->flusher = NULL;
    pthread_mutex_destroy(&f->mutex);
    close(f->wake_fd);
    free(f);
}

void jn_flusher_lock(jn_flusher *f) { pthread_mutex_lock(&f->mutex); }

void jn_flusher_unlock(jn_flusher *f) { pthread_mutex_unlock(&f->mutex); }

uint64_t jn_flusher_durable(jn_flusher *f) {
    return __atomic_load_n(&f->durable_seq, __ATOMIC_SEQ_CST);
}

void jn_flusher_set_durable(jn_flusher *f, uint64_t seq) {
    /* Caller holds the mutex (jn_flusher_lock) or the thread is not syncing. */
    if (seq > __atomic_load_n(&f->durable_seq, __ATOMIC_ACQUIRE)) {
        __atomic_store_n(&f->durable_seq, seq, __ATOMIC_SEQ_CST);
    }
}

int jn_flusher_error(jn_flusher *f) { return __atomic_load_n(&f->error, __ATOMIC_SEQ_CST); }

void jn_flusher_want_notify(jn_flusher *f, int want) {
    __atomic_store_n(&f->want_notify, want ? 1 : 0, __ATOMIC_SEQ_CST);
}

void jn_flusher_wake(jn_flusher *f) { eventfd_signal(f->wake_fd); }

void jn_flusher_want(jn_flusher *f, uint64_t seq) {
    uint64_t wanted = __atomic_load_n(&f->wanted_seq, __ATOMIC_RELAXED);
    /* Bounded: a (strong) exchange fails only when another waiter raised the
     * value, and then either it is already >= seq or fewer waiters remain. */
    while (seq > wanted &&
           !__atomic_compare_exchange_n(&f->wanted_seq, &wanted, seq, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
    }
    flusher_wake_if(f, (1 << JN_IDLE_EMPTY) | (1 << JN_IDLE_LAZY));
}

uint64_t jn_flusher_syncs(jn_flusher *f) { return __atomic_load_n(&f->syncs, __ATOMIC_RELAXED); }

void jn_flusher_set_log(jn_flusher *f, uint64_t *log, uint64_t capacity) {
    f->log_capacity = 0;
    __atomic_store_n(&f->log_length, 0, __ATOMIC_SEQ_CST);
    f->log = log;
    f->log_capacity = capacity;
}

uint64_t jn_flusher_log_length(jn_flusher *f) {
    return __atomic_load_n(&f->log_length, __ATOMIC_ACQUIRE);
}

/* ------------------------------------------------------------------------- */
/* Benchmark entry points                                                     */
/* ------------------------------------------------------------------------- */

int64_t jn_bench_append(jn_writer *w, const char *body, uint32_t body_len, uint64_t count,
                        uint64_t *latency_ns_out) {
    int usable = writer_usable(w);
    if (usable != JN_OK) return usable;
    uint64_t done = 0;
    for (; done < count; done++) {
        uint64_t start = latency_ns_out ? now_ns() : 0;
        int64_t seq = append_one(w, JN_TYPE_INGRESS, done, (const uint8_t *)body, body_len);
        if (seq < 0) break;
        publish(w, (uint64_t)seq);
        if (w->flusher != NULL) jn_flusher_want(w->flusher, (uint64_t)seq);  /* as Writer.append */
        if (latency_ns_out) latency_ns_out[done] = now_ns() - start;
    }
    return (int64_t)done;
}

uint64_t jn_bench_memcpy(uint8_t *base, uint64_t size, const char *record, uint32_t length,
                         uint64_t count) {
    JN_ASSERT(base != NULL);
    JN_ASSERT(length > 0 && JN_SEGMENT_HEADER_SIZE + (uint64_t)length <= size);
    uint64_t step = ((uint64_t)length + 7u) & ~(uint64_t)7u;
    uint64_t pos = JN_SEGMENT_HEADER_SIZE;
    for (uint64_t i = 0; i < count; i++) {
        if (pos + length > size) pos = JN_SEGMENT_HEADER_SIZE;
        memcpy(base + pos, record, length);
        pos += step;
    }
    return count * length;
}
